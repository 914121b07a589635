"""The per-call command budget, and --managed upstash: the commands Upstash lacks are
never sent (Redis's own INFO commandstats says so), on a server whose ACL denies them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp import Client
from pydantic import SecretStr

from mita_redis_mcp.app import App
from mita_redis_mcp.config import Limits, Settings
from mita_redis_mcp.server import build_server
from tests.conftest import Target, app_for, call_tool, error_text, installed
from tests.servers import ServerProcess, redis_binary, start_server
from tests.test_doctor import doctor, verdicts
from tests.test_least_privilege import READ_CALLS, seed

# What Upstash lacks, by the names INFO commandstats gives them.
LACKING = ("object", "memory", "slowlog", "latency", "client|list", "debug")


def calls(stats: dict[str, Any], name: str) -> int:
    entry = stats.get(f"cmdstat_{name}", {})
    return int(entry.get("calls", 0)) + int(entry.get("rejected_calls", 0))


# -- command budget ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_budget_stops_the_call_before_the_command_that_exceeds_it(
    real_target: Target,
) -> None:
    real_target.raw.sadd("app:set", "a", "b")
    real_target.raw.config_resetstat()
    app = app_for(real_target, command_budget=6)
    result = await call_tool(app, "get", {"key": "app:set"})
    await app.backend.close()
    assert "this call would exceed the command budget of 6 (spent 6)" in error_text(result)
    stats = real_target.raw.info("commandstats")
    # The first round trip (TYPE, PTTL, OBJECT ENCODING, STRLEN, GETRANGE) and the set's
    # SCARD were sent; SSCAN, the 7th, was not.
    assert calls(stats, "type") == 1
    assert calls(stats, "scard") == 1
    assert calls(stats, "sscan") == 0


@pytest.mark.anyio
async def test_a_pipeline_counts_each_inner_command(real_target: Target) -> None:
    real_target.raw.set("app:k", "v")
    real_target.raw.config_resetstat()
    app = app_for(real_target, command_budget=2)
    result = await call_tool(app, "get", {"key": "app:k"})
    await app.backend.close()
    assert "command budget of 2 (spent 0)" in error_text(result)
    assert calls(real_target.raw.info("commandstats"), "type") == 0


@pytest.mark.anyio
async def test_within_the_budget_the_answer_states_what_it_spent(real_target: Target) -> None:
    real_target.raw.set("app:k", "v")
    app = app_for(real_target, command_budget=5)
    result = await call_tool(app, "get", {"key": "app:k"})
    await app.backend.close()
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    assert result.structured_content["commands"] == 5


@pytest.mark.anyio
async def test_a_budget_that_runs_out_still_restores_notify_keyspace_events(
    real_target: Target,
) -> None:
    real_target.raw.config_set("notify-keyspace-events", "")
    app = app_for(real_target, prefixes=("cache:",), command_budget=5)
    result = await call_tool(app, "cache_hit_rate", {"window_seconds": 1, "observe_misses": True})
    await app.backend.close()
    assert "command budget of 5" in error_text(result)
    assert real_target.raw.config_get("notify-keyspace-events")["notify-keyspace-events"] == ""


def test_budget_is_an_option() -> None:
    settings = Settings.load({}, environ={"MITA_REDIS_MCP_COMMAND_BUDGET": "200"})
    assert settings.limits.command_budget == 200
    assert Limits().command_budget is None
    assert Settings.load({"managed": "upstash"}, environ={}).managed == "upstash"


# -- --managed upstash ------------------------------------------------------------------


@pytest.fixture
def upstash_like() -> Iterator[ServerProcess]:
    """A server whose `limited` user is denied what Upstash lacks (its CONFIG keeps
    only notify-keyspace-events, which an ACL cannot express: INFO commandstats proves
    the rest of CONFIG is never sent)."""
    binary = installed(redis_binary())
    server = start_server(binary)
    try:
        with server.client() as raw:
            seed(raw)
            raw.execute_command(
                "ACL", "SETUSER", "limited", "on", ">pw", "~*", "&*", "+@all",
                *(f"-{name}" for name in LACKING),
            )  # fmt: skip
        yield server
    finally:
        server.stop()


def run_suite(server: ServerProcess, managed: bool) -> dict[str, list[dict[str, Any]]]:
    settings = Settings(
        redis_url=SecretStr(f"redis://limited:pw@127.0.0.1:{server.port}/0"),
        profiles=("mita",),
        managed="upstash" if managed else None,
    )
    answers: dict[str, list[dict[str, Any]]] = {}

    async def run() -> None:
        async with Client(build_server(App.from_settings(settings))) as client:
            for name, arguments in READ_CALLS:
                result = await client.call_tool(name, arguments)
                assert not result.is_error, (name, error_text(result))
                assert result.structured_content is not None
                answers.setdefault(name, []).append(result.structured_content)

    anyio.run(run)
    return answers


def test_upstash_mode_never_sends_what_upstash_lacks(upstash_like: ServerProcess) -> None:
    with upstash_like.client() as raw:
        raw.config_resetstat()
        answers = run_suite(upstash_like, managed=True)
        stats = raw.info("commandstats")
    for name in LACKING:
        sent = {k: v for k, v in stats.items() if k.startswith(f"cmdstat_{name}")}
        assert not sent, sent
    # CONFIG only for notify-keyspace-events (observe_misses): GET and SET, never
    # GET maxmemory-policy (check_blacklist): 2 GETs per observe_misses call.
    assert calls(stats, "config|get") == 1
    for name in ("slowlog", "latency", "clients"):
        answer = answers[name][0]
        assert answer["available"] is False
        assert "not offered by Upstash" in answer["note"], answer
    assert all(a["encoding"] is None for a in answers["get"])
    assert (
        "maxmemory-policy could not be checked" in answers["check_blacklist"][0]["eviction"]["note"]
    )
    # No answer carries a refusal: nothing refused was ever sent.
    assert "NOPERM" not in repr(answers)


def test_without_the_mode_the_same_server_refuses_them(upstash_like: ServerProcess) -> None:
    with upstash_like.client() as raw:
        raw.config_resetstat()
        answers = run_suite(upstash_like, managed=False)
        stats = raw.info("commandstats")
    assert calls(stats, "slowlog|get") == 1
    assert "refused SLOWLOG (NOPERM)" in answers["slowlog"][0]["note"]


def test_doctor_in_upstash_mode_does_not_ask_for_what_upstash_lacks(
    upstash_like: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://limited:pw@127.0.0.1:{upstash_like.port}/0"
    _code, out, _err = doctor(capsys, url, "--managed", "upstash")
    status, detail = verdicts(out)["permissions"]
    assert (status, detail) == ("OK", "user 'limited' may run every command the tools send")
    # Without the mode, the same user lacks commands the tools would send.
    _code, out, _err = doctor(capsys, url)
    assert verdicts(out)["permissions"][0] == "WARN"
