"""set and delete: absent unless writes are on, bounded to the scope, all-or-nothing."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from mcp import Client
from mcp.types import Tool

from mita_redis_mcp.app import App
from mita_redis_mcp.server import build_server
from tests.conftest import (
    READ_TOOLS,
    TOOLS_WITH_WRITES,
    WRITE_TOOLS,
    Answer,
    MakeApp,
    Target,
    answer_of,
    call_tool,
    error_text,
)

pytestmark = pytest.mark.anyio


async def tools_of(app: App) -> dict[str, Tool]:
    async with Client(build_server(app)) as client:
        return {tool.name: tool for tool in (await client.list_tools()).tools}


async def write(app: App, tool: str, **arguments: Any) -> Answer:
    return answer_of(await call_tool(app, tool, arguments))


# -- writes off --------------------------------------------------------------------------


async def test_write_tools_are_not_listed_when_writes_are_off(make_app: MakeApp) -> None:
    assert list(await tools_of(make_app())) == READ_TOOLS


async def test_set_when_writes_are_off_says_how_to_enable_and_writes_nothing(
    make_app: MakeApp, target: Target
) -> None:
    target.raw.set("app:existing", "before")
    app = make_app()
    for key in ("app:existing", "app:new"):
        message = error_text(await call_tool(app, "set", {"key": key, "value": "after"}))
        assert "--allow-writes" in message
        assert "MITA_REDIS_MCP_ALLOW_WRITES" in message
    assert target.raw.get("app:existing") == b"before"
    assert target.raw.exists("app:new") == 0


async def test_delete_when_writes_are_off_says_how_to_enable_and_deletes_nothing(
    make_app: MakeApp, target: Target
) -> None:
    target.raw.set("app:keep", "v")
    message = error_text(await call_tool(make_app(), "delete", {"keys": ["app:keep"]}))
    assert "--allow-writes" in message
    assert "MITA_REDIS_MCP_ALLOW_WRITES" in message
    assert target.raw.get("app:keep") == b"v"


# -- tool declarations -------------------------------------------------------------------


async def test_write_tools_are_listed_when_writes_are_on(make_app: MakeApp) -> None:
    assert list(await tools_of(make_app(allow_writes=True))) == TOOLS_WITH_WRITES


async def test_tool_annotations_and_output_schemas(make_app: MakeApp) -> None:
    tools = await tools_of(make_app(allow_writes=True))
    for name, tool in tools.items():
        assert tool.output_schema is not None, name
        assert tool.output_schema.get("type") == "object", name
        assert tool.annotations is not None, name
        assert tool.description, name
    for name in READ_TOOLS:
        annotations = tools[name].annotations
        assert annotations is not None
        assert annotations.read_only_hint is True, name
    for name in WRITE_TOOLS:
        annotations = tools[name].annotations
        assert annotations is not None
        assert annotations.read_only_hint is False, name
    delete = tools["delete"].annotations
    assert delete is not None
    assert delete.destructive_hint is True


# -- set ---------------------------------------------------------------------------------


async def test_set_writes_a_string_without_expiry(make_app: MakeApp, target: Target) -> None:
    target.raw.set("app:k", "old", ex=100)
    answer = await write(make_app(allow_writes=True), "set", key="app:k", value="néw")
    assert answer["written"] is True
    assert answer["ttl_seconds"] is None
    assert answer["key"] == "app:k"
    assert target.raw.get("app:k") == "néw".encode()
    # As with Redis's SET, a plain write removes the old TTL.
    assert target.raw.pttl("app:k") == -1


async def test_set_with_ttl(make_app: MakeApp, target: Target) -> None:
    answer = await write(
        make_app(allow_writes=True), "set", key="app:k", value="v", ttl_seconds=90.5
    )
    assert answer["ttl_seconds"] == 90.5
    assert 0 < target.raw.pttl("app:k") <= 90_500


async def test_set_keep_ttl(make_app: MakeApp, target: Target) -> None:
    target.raw.set("app:k", "old", ex=200)
    answer = await write(
        make_app(allow_writes=True), "set", key="app:k", value="new", keep_ttl=True
    )
    assert answer["written"] is True
    assert answer["ttl_seconds"] is not None
    assert 0 < answer["ttl_seconds"] <= 200
    assert target.raw.get("app:k") == b"new"
    assert 0 < target.raw.pttl("app:k") <= 200_000


async def test_set_refuses_keep_ttl_with_ttl(make_app: MakeApp, target: Target) -> None:
    result = await call_tool(
        make_app(allow_writes=True),
        "set",
        {"key": "app:k", "value": "v", "keep_ttl": True, "ttl_seconds": 5},
    )
    assert "exclude each other" in error_text(result)
    assert target.raw.exists("app:k") == 0


async def test_set_only_if_absent(make_app: MakeApp, target: Target) -> None:
    target.raw.set("app:taken", "first", ex=100)
    app = make_app(allow_writes=True)
    refused = await write(app, "set", key="app:taken", value="second", only_if_absent=True)
    assert refused["written"] is False
    assert refused["ttl_seconds"] is not None
    assert 0 < refused["ttl_seconds"] <= 100
    assert target.raw.get("app:taken") == b"first"
    done = await write(app, "set", key="app:free", value="mine", only_if_absent=True)
    assert done["written"] is True
    assert target.raw.get("app:free") == b"mine"


async def test_set_only_if_exists(make_app: MakeApp, target: Target) -> None:
    target.raw.set("app:there", "first")
    app = make_app(allow_writes=True)
    refused = await write(app, "set", key="app:absent", value="x", only_if_exists=True)
    assert refused["written"] is False
    assert refused["ttl_seconds"] is None
    assert target.raw.exists("app:absent") == 0
    done = await write(app, "set", key="app:there", value="second", only_if_exists=True)
    assert done["written"] is True
    assert target.raw.get("app:there") == b"second"


async def test_set_refuses_both_conditions(make_app: MakeApp, target: Target) -> None:
    result = await call_tool(
        make_app(allow_writes=True),
        "set",
        {"key": "app:k", "value": "v", "only_if_absent": True, "only_if_exists": True},
    )
    assert "exclude each other" in error_text(result)
    assert target.raw.exists("app:k") == 0


async def test_set_base64_value_and_binary_key(make_app: MakeApp, target: Target) -> None:
    key = b"app:\xff\x00k"
    data = b"\x00\x01\xfe\xff raw"
    answer = await write(
        make_app(allow_writes=True),
        "set",
        key=base64.b64encode(key).decode(),
        key_encoding="base64",
        value=base64.b64encode(data).decode(),
        value_encoding="base64",
    )
    assert answer["written"] is True
    assert answer["key_base64"] == base64.b64encode(key).decode()
    assert target.raw.get(key) == data


async def test_set_refuses_invalid_base64_value(make_app: MakeApp, target: Target) -> None:
    result = await call_tool(
        make_app(allow_writes=True),
        "set",
        {"key": "app:k", "value": "%%%not base64", "value_encoding": "base64"},
    )
    assert "not valid base64" in error_text(result)
    assert target.raw.exists("app:k") == 0


@pytest.mark.parametrize("kind", ["hash", "list", "set", "zset", "stream"])
async def test_set_refuses_to_overwrite_another_type(
    make_app: MakeApp, target: Target, kind: str
) -> None:
    if kind == "hash":
        target.raw.hset("app:k", "f", "v")
    elif kind == "list":
        target.raw.rpush("app:k", "v")
    elif kind == "set":
        target.raw.sadd("app:k", "v")
    elif kind == "zset":
        target.raw.zadd("app:k", {"v": 1})
    else:
        target.raw.xadd("app:k", {"f": "v"})
    result = await call_tool(make_app(allow_writes=True), "set", {"key": "app:k", "value": "x"})
    message = error_text(result)
    assert f"holds a {kind}" in message
    assert target.raw.type("app:k") == kind.encode()


async def test_set_refuses_key_out_of_scope(make_app: MakeApp, target: Target) -> None:
    result = await call_tool(make_app(allow_writes=True), "set", {"key": "other:k", "value": "x"})
    assert "outside the allowed prefixes" in error_text(result)
    assert target.raw.exists("other:k") == 0


# -- delete ------------------------------------------------------------------------------


async def test_delete_removes_in_scope_keys(make_app: MakeApp, target: Target) -> None:
    target.raw.set("app:a", "1")
    target.raw.hset("app:b", "f", "v")
    target.raw.set("app:c", "keep")
    target.raw.set("other:a", "keep")
    answer = await write(
        make_app(allow_writes=True), "delete", keys=["app:a", "app:b", "app:missing", "app:a"]
    )
    # 3 keys journaled (TYPE, PTTL, DUMP each) for undo, then one UNLINK.
    assert answer == {"deleted": 2, "requested": 3, "commands": 10, "demo": False}
    assert target.raw.exists("app:a", "app:b") == 0
    assert target.raw.get("app:c") == b"keep"
    assert target.raw.get("other:a") == b"keep"


async def test_delete_with_one_key_out_of_scope_deletes_nothing(
    make_app: MakeApp, target: Target
) -> None:
    target.raw.set("app:a", "1")
    target.raw.set("app:b", "2")
    target.raw.set("other:x", "3")
    result = await call_tool(
        make_app(allow_writes=True), "delete", {"keys": ["app:a", "other:x", "app:b"]}
    )
    message = error_text(result)
    assert "outside the allowed prefixes" in message
    assert "nothing was sent to Redis" in message
    assert target.raw.exists("app:a", "app:b", "other:x") == 3


async def test_delete_binary_key(make_app: MakeApp, target: Target) -> None:
    key = b"app:\x80bin"
    target.raw.set(key, "v")
    answer = await write(
        make_app(allow_writes=True),
        "delete",
        keys=[base64.b64encode(key).decode()],
        key_encoding="base64",
    )
    assert answer["deleted"] == 1
    assert target.raw.exists(key) == 0


async def test_delete_refuses_more_than_the_maximum(make_app: MakeApp, target: Target) -> None:
    keys = [f"app:{i}" for i in range(101)]
    target.raw.mset(dict.fromkeys(keys, "v"))
    result = await call_tool(make_app(allow_writes=True), "delete", {"keys": keys})
    assert result.is_error
    assert target.raw.exists(*keys) == 101
