"""slowlog, latency, clients on a real server, and their graceful refusal under an ACL
user denied those commands (what Upstash lacks); keyspace_summary without MEMORY and
cache_hit_rate's observe_misses without CONFIG under the same user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from mita_redis_mcp.tools.cache import cache_hit_rate
from mita_redis_mcp.tools.diagnostics import clients, latency, slowlog
from tests.conftest import Target, app_for, call_tool, installed
from tests.servers import ServerProcess, redis_binary, running

pytestmark = pytest.mark.anyio


def command(client: redis.Redis, *args: str) -> Any:
    """``execute_command``, typed (redis-py leaves it unannotated)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def own_server() -> Iterator[ServerProcess]:
    binary = installed(redis_binary())
    with running(binary, "--slowlog-log-slower-than", "0") as server:
        with server.client() as c:
            command(
                c,
                "ACL",
                "SETUSER",
                "limited",
                "on",
                ">pw",
                "~*",
                "&*",
                "+@all",
                "-slowlog",
                "-latency",
                # Denied whole: the backend sends no CLIENT command on connect.
                "-client",
                "-memory",
                "-config",
            )
        yield server


@pytest.fixture
def admin(own_server: ServerProcess) -> Iterator[redis.Redis]:
    """The default user's client, on an emptied database."""
    with own_server.client() as client:
        client.flushall()
        yield client


def target_for(server: ServerProcess, user: str | None = None) -> Target:
    auth = f"{user}:pw@" if user else ""
    return Target("redis", server.client(), f"redis://{auth}127.0.0.1:{server.port}/0")


async def test_slowlog_masks_values_and_shows_scope_keys(
    own_server: ServerProcess, admin: redis.Redis
) -> None:
    command(admin, "SLOWLOG", "RESET")
    admin.set("app:visible", "secret-value")
    admin.set("other:hidden", "x")
    app = app_for(target_for(own_server))
    try:
        answer = await slowlog(app, count=20)
        listed = await clients(app)
        spikes = await latency(app)
    finally:
        await app.backend.close()
    sets = [e for e in answer.entries if e.command == "SET"]
    assert ["app:visible", "[masked]"] in [e.arguments for e in sets]
    assert ["[masked]", "[masked]"] in [e.arguments for e in sets]
    assert "secret-value" not in answer.model_dump_json()
    assert listed.available
    assert listed.total >= 1
    assert all(c.address.startswith("127.0.x.x") for c in listed.clients)
    assert "127.0.0.1" not in listed.model_dump_json()
    assert spikes.available


async def test_refused_commands_degrade_with_a_note(own_server: ServerProcess) -> None:
    app = app_for(target_for(own_server, "limited"))
    try:
        for answer, refused in (
            (await slowlog(app), "SLOWLOG"),
            (await latency(app), "LATENCY"),
            (await clients(app), "CLIENT LIST"),
        ):
            assert not answer.available
            assert answer.note
            assert f"refused {refused} (NOPERM)" in answer.note
        await app.backend.ping()  # the user itself works: only those commands are denied
    finally:
        await app.backend.close()


async def test_keyspace_summary_without_memory_falls_back_to_lengths(
    own_server: ServerProcess, admin: redis.Redis
) -> None:
    admin.set("app:small", "x")
    admin.set("app:big", "x" * 5000)
    admin.rpush("app:list", *[str(i) for i in range(30)])
    app = app_for(target_for(own_server, "limited"))
    result = await call_tool(app, "keyspace_summary", {})
    assert not result.is_error, result.content
    answer = result.structured_content
    assert answer is not None
    assert answer["complete"]
    assert answer["keys_examined"] == 3
    assert any("refused MEMORY USAGE" in n for n in answer["notes"])
    assert answer["memory_method"].startswith("MEMORY refused")
    assert all(n["memory"] is None for n in answer["namespaces"])
    biggest = [(b["key"], b["bytes"], b["length"]) for b in answer["biggest"]]
    assert biggest == [("app:big", None, 5000), ("app:list", None, 30), ("app:small", None, 1)]


async def test_observe_misses_refused_changes_nothing(
    own_server: ServerProcess, admin: redis.Redis
) -> None:
    admin.config_set("notify-keyspace-events", "Kg")
    before = admin.config_get("notify-keyspace-events")
    app = app_for(target_for(own_server, "limited"), profiles=("mita",), prefixes=())
    try:
        answer = await cache_hit_rate(app, window_seconds=1, observe_misses=True)
    finally:
        await app.backend.close()
    assert admin.config_get("notify-keyspace-events") == before
    assert answer.misses_by_namespace is None
    assert answer.per_namespace == []
    assert answer.notify_keyspace_events is None
    [note] = [n for n in answer.notes if n.startswith("observe_misses")]
    assert "refused CONFIG GET" in note
    assert "no misses per namespace" in note
    assert answer.server_wide is not None
