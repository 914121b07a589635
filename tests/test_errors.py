"""Failures: each is an is_error result with a short message safe to show a model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from mcp import Client

from mita_redis_mcp.server import build_server
from tests.conftest import Target, app_for, call_tool, error_text
from tests.servers import ServerProcess, free_port, running, start_server

pytestmark = pytest.mark.anyio

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("get", {"key": "app:k"}),
    ("keys", {"pattern": "app:*"}),
    ("info", {}),
]


@pytest.fixture
def own_server(binary: str) -> Iterator[ServerProcess]:
    """A redis-server of this test's own, to pause, lock down or stop."""
    with running(binary) as server:
        yield server


def assert_safe(message: str, *secrets: str) -> None:
    assert message
    assert len(message) < 400, message
    assert "Traceback" not in message
    for secret in secrets:
        assert secret not in message


def unreachable(port: int, url: str) -> Target:
    return Target("unreachable", redis.Redis(host="127.0.0.1", port=port), url)


@pytest.mark.parametrize(("tool", "arguments"), CALLS)
async def test_redis_unreachable(tool: str, arguments: dict[str, Any]) -> None:
    port = free_port()
    url = f"redis://:closed-port-pw-81@127.0.0.1:{port}/0"
    app = app_for(unreachable(port, url))
    try:
        message = error_text(await call_tool(app, tool, arguments))
    finally:
        await app.backend.close()
    assert "cannot reach Redis: connection refused" in message
    assert_safe(message, url, "closed-port-pw-81", str(port))


@pytest.mark.parametrize(("tool", "arguments"), CALLS)
async def test_redis_password_wrong(binary: str, tool: str, arguments: dict[str, Any]) -> None:
    with running(binary, password="the-right-pw-55") as server:
        url = f"redis://:a-wrong-pw-66@127.0.0.1:{server.port}/0"
        app = app_for(Target("wrong", server.client(), url))
        try:
            message = error_text(await call_tool(app, tool, arguments))
        finally:
            await app.backend.close()
    assert "Redis refused the credentials" in message
    assert_safe(message, url, "the-right-pw-55", "a-wrong-pw-66", str(server.port))


async def test_redis_timeout_then_recovers(own_server: ServerProcess) -> None:
    target = Target("paused", own_server.client(), own_server.url)
    target.raw.set("app:k", "v")
    app = app_for(target, command_timeout=0.5)
    try:
        async with Client(build_server(app)) as client:
            before = await client.call_tool("get", {"key": "app:k"})
            assert not before.is_error
            own_server.pause()
            try:
                during = await client.call_tool("get", {"key": "app:k"})
            finally:
                own_server.resume()
            message = error_text(during)
            assert "Redis did not answer" in message
            assert "0.5 s" in message
            assert_safe(message, own_server.url, str(own_server.port))
            after = await client.call_tool("get", {"key": "app:k"})
            assert not after.is_error, error_text(after)
            assert after.structured_content is not None
            assert after.structured_content["value"]["value"] == "v"
    finally:
        await app.backend.close()
        target.raw.close()


async def test_acl_noperm_is_a_clear_error(own_server: ServerProcess) -> None:
    admin = own_server.client()
    admin.acl_setuser(
        "limited",
        enabled=True,
        passwords=["+limited-pw-93"],
        keys=["app:*"],
        commands=["+@all", "-hscan"],
    )
    admin.hset("app:h", "f", "v")
    admin.set("app:s", "v")
    url = f"redis://limited:limited-pw-93@127.0.0.1:{own_server.port}/0"
    app = app_for(Target("limited", admin, url))
    try:
        refused = await call_tool(app, "get", {"key": "app:h"})
        allowed = await call_tool(app, "get", {"key": "app:s"})
    finally:
        await app.backend.close()
        admin.close()
    message = error_text(refused)
    assert "NOPERM" in message
    assert "hscan" in message.lower()
    assert_safe(message, url, "limited-pw-93", str(own_server.port))
    assert not allowed.is_error, error_text(allowed)


async def test_get_never_meets_wrongtype(own_server: ServerProcess) -> None:
    """get asks TYPE first and reads with that type's commands: no WRONGTYPE can reach it."""
    raw = own_server.client()
    raw.set("app:string", "v")
    raw.hset("app:hash", "f", "v")
    raw.rpush("app:list", "v")
    raw.sadd("app:set", "v")
    raw.zadd("app:zset", {"v": 1})
    raw.xadd("app:stream", {"f": "v"})
    app = app_for(Target("types", raw, own_server.url))
    try:
        async with Client(build_server(app)) as client:
            for kind in ("string", "hash", "list", "set", "zset", "stream"):
                result = await client.call_tool("get", {"key": f"app:{kind}"})
                assert not result.is_error, error_text(result)
                assert result.structured_content is not None
                assert result.structured_content["type"] == kind
    finally:
        await app.backend.close()
        raw.close()


async def test_redis_down_at_start_then_up_without_restart(binary: str) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    app = app_for(unreachable(port, url))
    try:
        async with Client(build_server(app)) as client:
            down = await client.call_tool("get", {"key": "app:k"})
            assert "cannot reach Redis" in error_text(down)
            assert_safe(error_text(down), url, str(port))
            server = start_server(binary, port=port)
            try:
                server.client().set("app:k", "up")
                up = await client.call_tool("get", {"key": "app:k"})
            finally:
                server.stop()
            assert not up.is_error, error_text(up)
            assert up.structured_content is not None
            assert up.structured_content["value"]["value"] == "up"
    finally:
        await app.backend.close()


async def test_invalid_arguments_are_errors_not_crashes(own_server: ServerProcess) -> None:
    app = app_for(Target("args", own_server.client(), own_server.url))
    try:
        async with Client(build_server(app)) as client:
            for tool, arguments in (
                ("get", {"key": ""}),
                ("get", {"key": "app:k", "count": 0}),
                ("keys", {"pattern": "app:[abc"}),
                ("keys", {"pattern": "app:" + "*a" * 20}),
                ("info", {"section": "bad section!"}),
            ):
                result = await client.call_tool(tool, arguments)
                assert_safe(error_text(result), own_server.url)
    finally:
        await app.backend.close()
