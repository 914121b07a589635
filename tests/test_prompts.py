"""The MCP prompts, listed and fetched through a real client: each names the tools that
answer its question."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
from mcp import Client
from mcp.types import TextContent

from mita_redis_mcp.app import App
from mita_redis_mcp.server import build_server
from tests.conftest import Target, app_for

pytestmark = pytest.mark.anyio


@pytest.fixture
async def app(fake_server: fakeredis.FakeServer) -> AsyncIterator[App]:
    target = Target(
        "fakeredis", fakeredis.FakeRedis(server=fake_server), "redis://fake/0", fake_server
    )
    made = app_for(target, profiles=("mita",), prefixes=())
    yield made
    target.raw.close()
    await made.backend.close()


async def prompt_text(client: Client, name: str, arguments: dict[str, str] | None = None) -> str:
    result = await client.get_prompt(name, arguments)
    texts = [m.content.text for m in result.messages if isinstance(m.content, TextContent)]
    assert len(texts) == 1
    return texts[0]


async def test_the_four_prompts_are_listed(app: App) -> None:
    async with Client(build_server(app)) as client:
        listed = await client.list_prompts()
    assert {p.name: p.title for p in listed.prompts} == {
        "why_429": "Why is this user getting 429s?",
        "token_revoked": "Was this token revoked?",
        "cache_working": "Is the cache working?",
        "filling_redis": "What is filling my Redis?",
    }
    why = next(p for p in listed.prompts if p.name == "why_429")
    assert [(a.name, a.required) for a in why.arguments or []] == [("client", False)]


@pytest.mark.parametrize(
    ("name", "arguments", "tools"),
    [
        ("why_429", {"client": "203.0.113.7 curl/8"}, ["inspect_rate_limits", "keys"]),
        ("token_revoked", {"token": "jti-123"}, ["check_blacklist", "list_sessions"]),
        ("cache_working", None, ["cache_hit_rate", "keyspace_summary"]),
        ("filling_redis", None, ["info", "keyspace_summary", "clients", "slowlog", "latency"]),
    ],
)
async def test_each_prompt_names_the_tools_that_answer_it(
    app: App, name: str, arguments: dict[str, str] | None, tools: list[str]
) -> None:
    async with Client(build_server(app)) as client:
        text = await prompt_text(client, name, arguments)
        registered = {t.name for t in (await client.list_tools()).tools}
    for tool in tools:
        assert f"`{tool}`" in text
        assert tool in registered
    for value in (arguments or {}).values():
        assert value in text
