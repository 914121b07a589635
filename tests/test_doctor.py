"""``mita-redis-mcp doctor`` on real redis-servers: a healthy one, evicting ones, an
unreachable one, a password, ACL users; and Backend.REQUIRED_COMMANDS checked against
what Redis itself saw the tools send."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp import Client
from pydantic import SecretStr

from mita_redis_mcp import cli
from mita_redis_mcp.app import App
from mita_redis_mcp.backend import Backend
from mita_redis_mcp.config import OPTIONS, Settings
from mita_redis_mcp.demo import (
    BLOCKED_IP,
    BLOCKED_UA,
    DEMO_CACHE_KEY,
    DEMO_JTI,
    DEMO_USER,
    demo_commands,
)
from mita_redis_mcp.doctor import eviction, managed_provider, mcp_json, mode
from mita_redis_mcp.server import build_server
from tests.conftest import error_text
from tests.servers import ServerProcess, free_port, running
from tests.test_blacklist import make_jwt

PASSWORD = "s3cret-doctor-pass"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


@pytest.fixture
def secured(binary: str) -> Iterator[ServerProcess]:
    """A server with a password for `default` and two ACL users."""
    with running(binary, password=PASSWORD) as server:
        with server.client() as raw:
            raw.execute_command(
                "ACL", "SETUSER", "noscan", "on", ">pw1", "~*", "&*", "+@all", "-scan"
            )
            raw.execute_command(
                "ACL", "SETUSER", "noacl", "on", ">pw2", "~*", "&*", "+@all", "-acl"
            )
        yield server


def doctor(capsys: pytest.CaptureFixture[str], url: str, *flags: str) -> tuple[int, str, str]:
    code = cli.main(["--redis-url", url, "--prefix", "app:", "--prefix", "mita:", *flags, "doctor"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def verdicts(out: str) -> dict[str, tuple[str, str]]:
    """check name -> (status, detail), from the report's verdict lines."""
    found: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        status, _, rest = line.partition("  ")
        if status.strip() in ("OK", "WARN", "FAIL"):
            name, _, detail = rest.strip().partition(": ")
            found[name] = (status.strip(), detail)
    return found


def snippet(out: str) -> dict[str, Any]:
    marker = ".mcp.json for this setup"
    assert marker in out
    parsed: dict[str, Any] = json.loads(out.split(marker, 1)[1].split("\n", 1)[1])
    return parsed


def test_healthy_server_is_all_ok(
    capsys: pytest.CaptureFixture[str], redis_server: ServerProcess
) -> None:
    code, out, err = doctor(capsys, redis_server.url)
    assert code == 0, out + err
    checks = verdicts(out)
    assert list(checks) == [
        "configuration",
        "TLS",
        "reachable",
        "authenticated",
        "server",
        "mode",
        "permissions",
        "maxmemory-policy",
    ]
    assert {status for status, _ in checks.values()} == {"OK"}, out
    assert checks["server"][1].startswith("redis ")
    assert checks["mode"][1].startswith("standalone")
    assert checks["maxmemory-policy"][1].startswith("noeviction")
    server = snippet(out)["mcpServers"]["mita-redis"]
    assert (server["command"], server["args"]) == ("uvx", ["--compile-bytecode", "mita-redis-mcp"])
    assert server["env"] == {"REDIS_URL": "${REDIS_URL}", "MITA_REDIS_MCP_PREFIXES": "app:,mita:"}


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_evicting_policy_warns_about_the_blacklist(
    capsys: pytest.CaptureFixture[str], binary: str, policy: str
) -> None:
    with running(binary, "--maxmemory-policy", policy) as server:
        code, out, _ = doctor(capsys, server.url)
    assert code == 0
    status, detail = verdicts(out)["maxmemory-policy"]
    assert status == "WARN"
    assert policy in detail
    assert "blacklist" in detail


def test_unreachable_server_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = doctor(capsys, f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0")
    assert code == 1
    assert verdicts(out)["reachable"] == ("FAIL", "cannot reach Redis: connection refused")
    assert PASSWORD not in out + err
    assert "Traceback" not in err


def test_wrong_password_fails_without_printing_either_password(
    capsys: pytest.CaptureFixture[str], secured: ServerProcess
) -> None:
    url = f"redis://:wrong-{PASSWORD}@127.0.0.1:{secured.port}/0"
    code, out, err = doctor(capsys, url)
    assert code == 1
    status, detail = verdicts(out)["authenticated"]
    assert status == "FAIL"
    assert "refused the credentials" in detail
    assert PASSWORD not in out + err
    assert "Traceback" not in err

    code, out, err = doctor(capsys, secured.url)
    assert code == 0, out
    assert verdicts(out)["authenticated"] == ("OK", "as ACL user 'default', with a password")
    assert PASSWORD not in out + err
    assert snippet(out)["mcpServers"]["mita-redis"]["env"]["REDIS_URL"] == "${REDIS_URL}"


def test_acl_user_without_a_needed_command_fails_naming_it(
    capsys: pytest.CaptureFixture[str], secured: ServerProcess
) -> None:
    code, out, _ = doctor(capsys, f"redis://noscan:pw1@127.0.0.1:{secured.port}/0")
    assert code == 1
    status, detail = verdicts(out)["permissions"]
    assert status == "FAIL"
    assert "user 'noscan' may not run SCAN" in detail
    assert "pw1" not in out


def test_acl_refused_means_not_checked(
    capsys: pytest.CaptureFixture[str], secured: ServerProcess
) -> None:
    code, out, _ = doctor(capsys, f"redis://noacl:pw2@127.0.0.1:{secured.port}/0")
    assert code == 0
    checks = verdicts(out)
    assert checks["authenticated"][0] == "OK"
    assert checks["permissions"][0] == "WARN"
    assert "could not be checked" in checks["permissions"][1]


def test_invalid_configuration_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--redis-url", "http://x", "doctor"])
    out = capsys.readouterr().out
    assert code == 2
    assert verdicts(out)["configuration"][0] == "FAIL"


def test_snippet_names_the_configured_profiles_and_options() -> None:
    settings = Settings.load(
        {"redis_url": f"redis://u:{PASSWORD}@h:1/0", "profiles": ["mita", "limits"]},
        environ={"MITA_REDIS_MCP_ALLOW_WRITES": "1", "MITA_REDIS_MCP_MAX_ITEMS": "50"},
    )
    text = json.dumps(mcp_json(settings))
    assert PASSWORD not in text
    assert json.loads(text)["mcpServers"]["mita-redis"]["env"] == {
        "REDIS_URL": "${REDIS_URL}",
        "MITA_REDIS_MCP_PROFILES": "mita,limits",
        "MITA_REDIS_MCP_ALLOW_WRITES": "1",
        "MITA_REDIS_MCP_MAX_ITEMS": "50",
    }


def test_pure_verdicts() -> None:
    assert managed_provider("eu1-fast-cat-12345.upstash.io") == "Upstash"
    assert managed_provider("localhost") is None
    assert eviction(None).status == "WARN"
    assert eviction("noeviction").status == "OK"
    upstash = mode(
        {"redis_mode": "standalone"}, {}, {"role": "master"}, None, "x.upstash.io", writes=False
    )
    assert "managed: Upstash" in upstash.detail
    assert mode({"redis_mode": "sentinel"}, {}, {}, 0, "h", writes=False).status == "FAIL"
    cluster = mode({}, {"cluster_enabled": 1}, {}, 0, "h", writes=False)
    assert (cluster.status, cluster.detail.split(":")[0]) == ("WARN", "cluster")
    managed = mode({}, {}, {"role": "master"}, 2, "h", writes=False)
    assert "sentinel-managed (2" in managed.detail


# -- REQUIRED_COMMANDS is what the tools send -------------------------------------------

_SUBCOMMANDS = {"config", "object", "memory", "slowlog", "latency", "client", "acl"}
# Sent by redis-py on connect (its handshake), or by this test itself: not by a tool.
_NOT_TOOLS = {"hello", "client|setinfo", "config|resetstat"}


def acl_name(words: list[str]) -> str:
    """The name INFO commandstats gives a command: `config|get`, `scan`."""
    first = words[0].lower()
    return f"{first}|{words[1].lower()}" if first in _SUBCOMMANDS else first


def test_required_commands_are_what_the_tools_send(binary: str) -> None:
    """Every tool, on a keyspace that reaches each of its reads, against a fresh server;
    then INFO commandstats (Redis's own count, pub/sub included) is compared with
    Backend.REQUIRED_COMMANDS in both directions."""
    listed = {
        acl_name(template.split(" "))
        for kind, template, _ in Backend.REQUIRED_COMMANDS
        if kind != "cluster"  # sent only to a Redis Cluster
    }
    with running(binary) as server, server.client() as raw:
        for command in demo_commands():
            raw.execute_command(*command)
        raw.set("tag:string", "s")
        raw.hset("tag:hash", "f", "v")
        raw.rpush("tag:list", "a")
        raw.sadd("tag:set", "m")
        raw.zadd("tag:zset", {"m": 1})
        raw.xadd("tag:stream", {"f": "v"})
        raw.set("LIMITS:LIMITER/k1/app.api/5/1/minute", 3, ex=60)
        raw.rpush("LIMITS:LIMITER/k2/app.api/3/1/minute", "1800000000.0")
        raw.expire("LIMITS:LIMITER/k2/app.api/3/1/minute", 60)
        raw.config_resetstat()

        settings = Settings(
            redis_url=SecretStr(server.url), profiles=("mita", "limits"), allow_writes=True
        )
        calls: list[tuple[str, dict[str, Any]]] = [
            *[
                ("get", {"key": f"tag:{t}"})
                for t in ("string", "hash", "list", "set", "zset", "stream")
            ],
            ("get", {"key": DEMO_CACHE_KEY}),
            ("keys", {"pattern": "tag:*"}),
            ("info", {"section": "stats"}),
            ("inspect_rate_limits", {"identifier": BLOCKED_IP, "user_agent": BLOCKED_UA}),
            ("inspect_rate_limits", {"identifier": "k1"}),
            ("inspect_rate_limits", {"identifier": "k2"}),
            ("list_sessions", {"user": DEMO_USER}),
            ("check_blacklist", {"token": make_jwt({"jti": DEMO_JTI, "sub": DEMO_USER})}),
            ("cache_hit_rate", {"window_seconds": 1, "observe_misses": True}),
            ("keyspace_summary", {}),
            ("slowlog", {}),
            ("latency", {}),
            ("clients", {}),
            ("set", {"key": "tag:new", "value": "v"}),
            ("delete", {"keys": ["tag:new"]}),
            ("undo", {"count": 1}),
            ("delete_pattern", {"pattern": "tag:none:*"}),
        ]

        async def run_all() -> None:
            # One session for every call: the set of commands does not depend on it.
            async with Client(build_server(App.from_settings(settings))) as client:
                for name, arguments in calls:
                    result = await client.call_tool(name, arguments)
                    assert not result.is_error, (name, error_text(result))

        anyio.run(run_all)
        stats = raw.info("commandstats")
    seen = {name.removeprefix("cmdstat_") for name in stats} - _NOT_TOOLS
    assert seen - listed == set(), "sent by the tools but missing from REQUIRED_COMMANDS"
    assert listed - seen == set(), "listed but no tool sent it"
