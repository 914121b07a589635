"""info: INFO parsed into typed sections, addresses hidden unless asked, no secret ever shown."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis
from mcp.types import CallToolResult

from mita_redis_mcp.info import parse_info, redact_info
from tests.conftest import Answer, Target, answer_of, app_for, call_tool, error_text
from tests.servers import ServerProcess, redis_binary, running, start_server

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["redis", "valkey"])
def server_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Each real server kind, emptied: fakeredis has no INFO command to show."""
    server: ServerProcess = request.getfixturevalue(f"{request.param}_server")
    target = Target(request.param, server.client(), server.url)
    target.raw.flushall()
    yield target
    target.raw.close()


def everything_shown(result: CallToolResult) -> str:
    """All the model sees of one result: structured content and text blocks."""
    blocks = " ".join(getattr(block, "text", "") for block in result.content)
    return json.dumps(result.structured_content) + blocks


async def info(target: Target, **arguments: Any) -> Answer:
    app = app_for(target)
    try:
        return answer_of(await call_tool(app, "info", arguments))
    finally:
        await app.backend.close()


async def test_info_sections_are_parsed_and_typed(server_target: Target) -> None:
    sections = (await info(server_target))["sections"]
    assert {"server", "clients", "memory", "stats"} <= set(sections)
    assert isinstance(sections["server"]["redis_version"], str)
    assert isinstance(sections["server"]["tcp_port"], int)
    assert isinstance(sections["memory"]["used_memory"], int)
    assert isinstance(sections["memory"]["mem_fragmentation_ratio"], float)
    assert isinstance(sections["clients"]["connected_clients"], int)
    assert sections["clients"]["connected_clients"] >= 1


async def test_info_one_section(server_target: Target) -> None:
    answer = await info(server_target, section="memory")
    assert list(answer["sections"]) == ["memory"]
    assert answer["redacted"] == []


async def test_info_keyspace_counts_keys(server_target: Target) -> None:
    server_target.raw.set("app:a", "1")
    server_target.raw.set("app:b", "1", ex=600)
    server_target.raw.hset("outside:h", "f", "v")
    keyspace = (await info(server_target, section="keyspace"))["sections"]["keyspace"]
    db0 = keyspace["db0"]
    assert db0["keys"] == 3
    assert db0["expires"] == 1
    assert isinstance(db0["avg_ttl"], int)


async def test_info_commandstats_are_objects(server_target: Target) -> None:
    server_target.raw.get("app:anything")
    stats = (await info(server_target, section="commandstats"))["sections"]["commandstats"]
    get = stats["cmdstat_get"]
    assert isinstance(get["calls"], int)
    assert get["calls"] >= 1
    assert isinstance(get["usec_per_call"], float)


async def test_info_hides_local_addresses_and_paths_by_default(server_target: Target) -> None:
    app = app_for(server_target)
    try:
        hidden = await call_tool(app, "info", {"section": "everything"})
        shown = await call_tool(app, "info", {"section": "everything", "include_addresses": True})
    finally:
        await app.backend.close()
    answer = answer_of(hidden)
    assert "server.executable" in answer["redacted"]
    assert "executable" not in answer["sections"]["server"]
    text = everything_shown(hidden)
    # Neither the bind address (Valkey's listener0:bind=...) nor the binary's path.
    assert "127.0.0.1" not in text
    assert "-server" not in text
    assert "executable" in answer_of(shown)["sections"]["server"]
    assert answer_of(shown)["redacted"] == []


async def test_info_never_shows_the_password() -> None:
    binary = redis_binary()
    assert binary is not None
    password = "info-secret-pw-7Qx9"
    with running(binary, password=password) as server:
        target = Target("password", server.client(), server.url)
        target.raw.set("app:k", "v")
        app = app_for(target)
        try:
            results = [
                await call_tool(app, "info", {}),
                await call_tool(app, "info", {"section": "everything"}),
                await call_tool(app, "info", {"section": "everything", "include_addresses": True}),
                await call_tool(app, "get", {"key": "app:k"}),
                await call_tool(app, "keys", {}),
            ]
        finally:
            await app.backend.close()
    for result in results:
        assert not result.is_error, error_text(result)
        assert password not in everything_shown(result)
        assert server.url not in everything_shown(result)


async def test_info_wrong_password_error_shows_neither_password_nor_url() -> None:
    binary = redis_binary()
    assert binary is not None
    password = "right-pw-Hk28"
    wrong = "wrong-pw-Zq41"
    with running(binary, password=password) as server:
        for url in (
            f"redis://:{wrong}@127.0.0.1:{server.port}/0",
            f"redis://default:{wrong}@127.0.0.1:{server.port}/0",
            f"redis://127.0.0.1:{server.port}/0",
        ):
            target = Target("wrong-password", server.client(), url)
            app = app_for(target)
            try:
                result = await call_tool(app, "info", {})
            finally:
                await app.backend.close()
                target.raw.close()
            message = error_text(result)
            assert "credentials" in message
            for secret in (password, wrong, url, f"{server.port}"):
                assert secret not in message
            assert "Traceback" not in message


# -- replication addresses -----------------------------------------------------------------


async def _wait_for_replica(primary: redis.Redis) -> None:
    with anyio.fail_after(30):
        while True:
            replication = primary.info("replication")
            replica = replication.get("slave0")
            if isinstance(replica, dict) and replica.get("state") == "online":
                return
            await anyio.sleep(0.05)


async def test_info_replication_addresses_hidden_unless_asked() -> None:
    binary = redis_binary()
    assert binary is not None
    with running(binary, "--repl-diskless-sync-delay", "0") as primary:
        replica = start_server(binary, "--replicaof", "127.0.0.1", str(primary.port))
        try:
            await _wait_for_replica(primary.client())
            on_primary = Target("primary", primary.client(), primary.url)
            on_replica = Target("replica", replica.client(), replica.url)
            hidden = await info(on_primary, section="replication")
            shown = await info(on_primary, section="replication", include_addresses=True)
            replica_hidden = await info(on_replica, section="replication")
            replica_shown = await info(on_replica, section="replication", include_addresses=True)
            on_primary.raw.close()
            on_replica.raw.close()
        finally:
            replica.stop()

    slave0 = hidden["sections"]["replication"]["slave0"]
    assert "ip" not in slave0
    assert slave0["port"] == replica.port
    assert slave0["state"] == "online"
    assert "replication.slave0.ip" in hidden["redacted"]
    assert "127.0.0.1" not in json.dumps(hidden)
    assert shown["sections"]["replication"]["slave0"]["ip"] == "127.0.0.1"
    assert shown["redacted"] == []

    assert replica_hidden["sections"]["replication"]["role"] == "slave"
    assert "master_host" not in replica_hidden["sections"]["replication"]
    assert "replication.master_host" in replica_hidden["redacted"]
    assert "127.0.0.1" not in json.dumps(replica_hidden)
    assert replica_shown["sections"]["replication"]["master_host"] == "127.0.0.1"
    assert replica_shown["sections"]["replication"]["master_port"] == primary.port


# -- parse_info / redact_info, pure --------------------------------------------------------

SAMPLE = (
    "# Server\r\n"
    "redis_version:7.2.4\r\n"
    "redis_git_sha1:00000000\r\n"
    "uptime_in_seconds:1234\r\n"
    "executable:/opt/redis/bin/redis-server\r\n"
    "config_file:/etc/redis/redis.conf\r\n"
    "listener0:name=tcp,bind=10.0.0.5,port=6379\r\n"
    "\r\n"
    "# Memory\r\n"
    "used_memory:1048576\r\n"
    "mem_fragmentation_ratio:1.25\r\n"
    "maxmemory_policy:noeviction\r\n"
    "\r\n"
    "# Replication\r\n"
    "role:master\r\n"
    "connected_slaves:1\r\n"
    "slave0:ip=10.0.0.7,port=6380,state=online,offset=42,lag=0\r\n"
    "master_repl_offset:-1\r\n"
    "\r\n"
    "# Sentinel-like\r\n"
    "master0:name=mymaster,status=ok,address=10.0.0.9:6379,slaves=2\r\n"
    "\r\n"
    "# Future\r\n"
    "module_auth_password:hunter2\r\n"
    "api_token:abc123\r\n"
    "\r\n"
    "# Keyspace\r\n"
    "db0:keys=10,expires=2,avg_ttl=3000\r\n"
    "db3:keys=1,expires=0,avg_ttl=0\r\n"
    "\r\n"
    "# Errorstats\r\n"
    "errorstat_ERR:count=3\r\n"
    "\r\n"
    "# Empty\r\n"
)


def test_parse_info_types_fields_and_splits_objects() -> None:
    sections = parse_info(SAMPLE)
    assert list(sections) == [
        "server",
        "memory",
        "replication",
        "sentinel-like",
        "future",
        "keyspace",
        "errorstats",
    ]
    assert sections["server"]["redis_version"] == "7.2.4"
    assert sections["server"]["uptime_in_seconds"] == 1234
    assert sections["server"]["executable"] == "/opt/redis/bin/redis-server"
    assert sections["memory"] == {
        "used_memory": 1048576,
        "mem_fragmentation_ratio": 1.25,
        "maxmemory_policy": "noeviction",
    }
    assert sections["replication"]["slave0"] == {
        "ip": "10.0.0.7",
        "port": 6380,
        "state": "online",
        "offset": 42,
        "lag": 0,
    }
    assert sections["replication"]["master_repl_offset"] == -1
    assert sections["keyspace"] == {
        "db0": {"keys": 10, "expires": 2, "avg_ttl": 3000},
        "db3": {"keys": 1, "expires": 0, "avg_ttl": 0},
    }
    assert sections["errorstats"] == {"errorstat_ERR": {"count": 3}}


def test_parse_info_puts_headerless_fields_in_server() -> None:
    assert parse_info("redis_version:7.0.0\r\nrole:master\r\n") == {
        "server": {"redis_version": "7.0.0", "role": "master"}
    }


def test_redact_info_drops_addresses_and_paths_by_default() -> None:
    clean, removed = redact_info(parse_info(SAMPLE), include_addresses=False)
    assert "executable" not in clean["server"]
    assert "config_file" not in clean["server"]
    assert clean["server"]["listener0"] == {"name": "tcp", "port": 6379}
    assert clean["replication"]["slave0"] == {
        "port": 6380,
        "state": "online",
        "offset": 42,
        "lag": 0,
    }
    assert clean["sentinel-like"]["master0"] == {"name": "mymaster", "status": "ok", "slaves": 2}
    assert set(removed) >= {
        "server.executable",
        "server.config_file",
        "server.listener0.bind",
        "replication.slave0.ip",
        "sentinel-like.master0.address",
    }
    text = json.dumps(clean)
    for leaked in ("10.0.0.", "/opt/redis", "/etc/redis"):
        assert leaked not in text


def test_redact_info_keeps_addresses_when_asked() -> None:
    clean, removed = redact_info(parse_info(SAMPLE), include_addresses=True)
    assert clean["replication"]["slave0"] == {
        "ip": "10.0.0.7",
        "port": 6380,
        "state": "online",
        "offset": 42,
        "lag": 0,
    }
    assert clean["server"]["listener0"] == {"name": "tcp", "bind": "10.0.0.5", "port": 6379}
    assert clean["server"]["executable"] == "/opt/redis/bin/redis-server"
    assert set(removed) == {"future.module_auth_password", "future.api_token"}


@pytest.mark.parametrize("include_addresses", [False, True])
def test_redact_info_always_drops_credential_like_fields(include_addresses: bool) -> None:
    clean, removed = redact_info(parse_info(SAMPLE), include_addresses=include_addresses)
    assert clean["future"] == {}
    assert {"future.module_auth_password", "future.api_token"} <= set(removed)
    assert "hunter2" not in json.dumps(clean)
    assert "abc123" not in json.dumps(clean)
