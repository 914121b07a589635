"""Least privilege: the ACL SETUSER line doctor prints is all the server needs.

A real redis-server of the test's own gets exactly that user; the whole read tool suite
(core tools over every type, the mita domain tools on the seeded MITA keyspace, the
diagnostics) runs as it without one NOPERM, and Redis itself refuses that user any key
outside the prefixes. Then the same with writes on and the write-mode line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis
from mcp import Client
from pydantic import SecretStr

from mita_redis_mcp.app import App
from mita_redis_mcp.backend import Backend
from mita_redis_mcp.config import Settings
from mita_redis_mcp.demo import (
    BLOCKED_IP,
    BLOCKED_UA,
    DEMO_CACHE_KEY,
    DEMO_JTI,
    DEMO_USER,
    demo_commands,
)
from mita_redis_mcp.doctor import (
    acl_command_name,
    acl_commands,
    acl_pattern,
    acl_setuser,
    command_line,
)
from mita_redis_mcp.server import build_server
from tests.conftest import error_text, installed
from tests.servers import ServerProcess, redis_binary, start_server
from tests.test_blacklist import make_jwt

USER = "mita-mcp"
PASSWORD = "pw-least-privilege"
TYPES = ("string", "hash", "list", "set", "zset", "stream")

# Every read tool, with arguments that reach each of its reads on the seeded keyspace.
READ_CALLS: list[tuple[str, dict[str, Any]]] = [
    *[("get", {"key": f"cache:lp:{t}"}) for t in TYPES],
    ("get", {"key": DEMO_CACHE_KEY}),
    ("get", {"key": "cache:lp:missing"}),
    ("keys", {"pattern": "cache:lp:*"}),
    ("keys", {"pattern": "*"}),
    ("info", {}),
    ("info", {"section": "stats"}),
    ("inspect_rate_limits", {"identifier": BLOCKED_IP, "user_agent": BLOCKED_UA}),
    ("list_sessions", {"user": DEMO_USER}),
    ("check_blacklist", {"token": make_jwt({"jti": DEMO_JTI, "sub": DEMO_USER})}),
    ("check_blacklist", {"jti": DEMO_JTI}),
    ("cache_hit_rate", {"window_seconds": 1}),
    ("cache_hit_rate", {"window_seconds": 1, "observe_misses": True}),
    ("keyspace_summary", {}),
    ("slowlog", {}),
    ("latency", {}),
    ("clients", {}),
]
WRITE_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("set", {"key": "cache:lp:new", "value": "v", "ttl_seconds": 60}),
    ("get", {"key": "cache:lp:new"}),
    ("delete", {"keys": ["cache:lp:new", "cache:lp:string"]}),
]


def seed(raw: redis.Redis) -> None:
    for command in demo_commands():
        raw.execute_command(*command)  # type: ignore[no-untyped-call]
    raw.set("cache:lp:string", "s")
    raw.hset("cache:lp:hash", "f", "v")
    raw.rpush("cache:lp:list", "a")
    raw.sadd("cache:lp:set", "m")
    raw.zadd("cache:lp:zset", {"m": 1})
    raw.xadd("cache:lp:stream", {"f": "v"})
    raw.set("session:outside", "not in scope")


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    binary = installed(redis_binary())
    started = start_server(binary)
    try:
        with started.client() as raw:
            seed(raw)
        yield started
    finally:
        started.stop()


def settings_for(server: ServerProcess, *, writes: bool) -> Settings:
    url = f"redis://{USER}:{PASSWORD}@127.0.0.1:{server.port}/0"
    return Settings(redis_url=SecretStr(url), profiles=("mita",), allow_writes=writes)


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def run_as_user(
    server: ServerProcess, calls: list[tuple[str, dict[str, Any]]], *, writes: bool, withheld: bool
) -> dict[str, list[dict[str, Any]]]:
    """Create the doctor's user on ``server``, run ``calls`` as it, and return the
    answers by tool; any tool error fails the test."""
    settings = settings_for(server, writes=writes)
    app = App.from_settings(settings)
    prefixes = [p.decode() for p in app.scope.prefixes]
    rules = acl_setuser(prefixes, writes=writes, password=PASSWORD, withheld=withheld)
    with server.client() as raw:
        assert raw.execute_command("ACL", "SETUSER", *rules) in (b"OK", "OK", True)
    answers: dict[str, list[dict[str, Any]]] = {}

    async def run() -> None:
        async with Client(build_server(app)) as client:
            for name, arguments in calls:
                result = await client.call_tool(name, arguments)
                assert not result.is_error, (name, arguments, error_text(result))
                assert result.structured_content is not None
                answers.setdefault(name, []).append(result.structured_content)

    anyio.run(run)
    return answers


# -- the line ---------------------------------------------------------------------------


def test_acl_pattern_escapes_every_glob_character() -> None:
    assert acl_pattern("rate_limit:") == "rate_limit:*"
    assert acl_pattern("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f*"


def test_read_only_line_has_no_write_command() -> None:
    line = acl_setuser(["rate_limit:", "mita:blacklist:token:"], writes=False)
    assert line[:4] == ["mita-mcp", "on", ">PASSWORD", "resetkeys"]
    assert line[4:8] == ["~rate_limit:*", "~mita:blacklist:token:*", "resetchannels", "-@all"]
    assert {"+scan", "+type", "+getrange", "+info", "+object|encoding"} <= set(line)
    assert not {"+set", "+unlink", "+config|get", "+config|set", "+subscribe"} & set(line)
    assert not any(word.startswith("&") for word in line)


def test_write_line_adds_the_write_commands_only() -> None:
    read = set(acl_commands(writes=False))
    writes = {
        acl_command_name(template.split(" "))
        for kind, template, _ in Backend.REQUIRED_COMMANDS
        if kind == "write"
    }
    assert {"set", "unlink"} <= writes
    assert set(acl_commands(writes=True)) - read == writes


def test_withheld_commands_come_with_the_keymiss_channel_of_the_database() -> None:
    line = acl_setuser(["app:"], writes=False, withheld=True, db=3)
    assert "&__keyevent@3__:keymiss" in line
    assert {"+config|get", "+config|set", "+subscribe", "+unsubscribe", "+select"} <= set(line)


def test_upstash_line_leaves_out_what_upstash_lacks() -> None:
    names = set(acl_commands(writes=False, managed="upstash", withheld=True))
    assert not {"object|encoding", "memory|usage", "slowlog|get", "latency|latest"} & names
    assert not {"client|list", "config|get"} & names
    assert {"config|set", "subscribe", "scan"} <= names


def test_allow_all_keys_is_every_key() -> None:
    assert "~*" in acl_setuser(["ignored:"], writes=False, allow_all_keys=True)


def test_command_line_quotes_what_redis_cli_would_split() -> None:
    words = acl_setuser(["my app:", 'say"'], writes=False)
    assert command_line(words[4:6]) == '"~my app:*" "~say\\"*"'


def test_doctor_prints_the_line(
    capsys: pytest.CaptureFixture[str], redis_server: ServerProcess
) -> None:
    from mita_redis_mcp import cli

    cli.main(["--redis-url", redis_server.url, "--prefix", "rate_limit:", "doctor"])
    out = capsys.readouterr().out
    expected = "ACL SETUSER " + command_line(acl_setuser(["rate_limit:"], writes=False))
    assert expected in out.splitlines()
    assert "+config|set +subscribe" in out


# -- on a real server, as that user -----------------------------------------------------


def test_read_only_suite_needs_nothing_more_than_the_line(server: ServerProcess) -> None:
    answers = run_as_user(server, READ_CALLS, writes=False, withheld=False)
    # Only the withheld CONFIG may be refused, and only inside a note saying so.
    for text in strings(answers):
        if "NOPERM" in text:
            assert "CONFIG" in text, text
    for name in ("slowlog", "latency", "clients"):
        assert answers[name][0]["available"] is True, answers[name]
    assert {a["type"] for a in answers["get"][:6]} == set(TYPES)
    assert all(a["encoding"] for a in answers["get"][:6])
    # Redis itself refuses this user any key outside the prefixes.
    with redis.Redis(port=server.port, username=USER, password=PASSWORD) as raw:
        with pytest.raises(redis.exceptions.NoPermissionError):
            raw.get("session:outside")
        with pytest.raises(redis.exceptions.NoPermissionError):
            raw.set("cache:lp:string", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            raw.config_get("requirepass")


def test_withheld_commands_give_observe_misses_and_the_eviction_check(
    server: ServerProcess,
) -> None:
    calls = [c for c in READ_CALLS if c[0] in ("cache_hit_rate", "check_blacklist")]
    answers = run_as_user(server, calls, writes=False, withheld=True)
    assert not any("NOPERM" in text for text in strings(answers))
    assert answers["check_blacklist"][0]["eviction"]["policy"] == "noeviction"


def test_write_suite_needs_nothing_more_than_the_write_line(server: ServerProcess) -> None:
    answers = run_as_user(server, READ_CALLS + WRITE_CALLS, writes=True, withheld=True)
    assert not any("NOPERM" in text for text in strings(answers))
    with server.client() as raw:
        assert raw.exists("cache:lp:new", "cache:lp:string") == 0
    with redis.Redis(port=server.port, username=USER, password=PASSWORD) as raw:
        with pytest.raises(redis.exceptions.NoPermissionError):
            raw.set("session:outside", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            raw.delete("session:outside")
