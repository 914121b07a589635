"""keyspace_summary on a MITA-like keyspace: leaks, unrecognised keys, budget and cursor,
progress notifications received by a real MCP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client

from mita_redis_mcp.app import App
from mita_redis_mcp.server import build_server
from tests.conftest import Target, app_for

pytestmark = pytest.mark.anyio

JTI = "0b5c3f9e-3a61-4c55-9d2e-6f1c2a7b8e9{}"


@pytest.fixture
async def mita_app(real_target: Target) -> AsyncIterator[App]:
    app = app_for(real_target, profiles=("mita",), prefixes=())
    yield app
    await app.backend.close()


async def summary(app: App, reported: list[float] | None = None, **arguments: Any) -> Any:
    # The SDK's ProgressFnT protocol names the parameters: progress, total, message.
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if reported is not None:
            reported.append(progress)

    async with Client(build_server(app)) as client:
        result = await client.call_tool(
            "keyspace_summary", arguments, progress_callback=on_progress
        )
    assert not result.is_error, result.content
    return result.structured_content


async def walk_to_the_end(app: App, budget: int) -> list[Any]:
    """Every answer of a walk resumed with next_cursor until it is complete."""
    answers = [await summary(app, budget=budget)]
    while not answers[-1]["complete"]:
        assert len(answers) < 200, "the walk does not end"
        answers.append(await summary(app, budget=budget, cursor=answers[-1]["next_cursor"]))
    return answers


def keys_of(answers: list[Any], namespace: str) -> int:
    return sum(n["keys"] for a in answers for n in a["namespaces"] if n["namespace"] == namespace)


async def test_namespaces_leaks_unrecognised_and_progress(
    mita_app: App, real_target: Target
) -> None:
    raw = real_target.raw
    for i in range(3):
        raw.set("mita:blacklist:token:" + JTI.format(i), "blacklisted", ex=3600)
    raw.set("mita:blacklist:token:" + JTI.format(9), "blacklisted")  # a leak
    raw.zadd("rate_limit:auth_login:client:0123456789abcdef", {"1.0": 1.0})
    raw.expire("rate_limit:auth_login:client:0123456789abcdef", 960)
    raw.set("rate_limit:weird", "x")  # in scope, no namespace
    raw.set("FASTAPI_LIMITER:203.0.113.7:/login:0:0", 1)  # no TTL: a leak, IP masked
    raw.set("outside:key", "x")  # out of scope: in no bucket
    progress: list[float] = []
    answer = await summary(mita_app, progress)
    by_name = {n["namespace"]: n for n in answer["namespaces"]}
    assert by_name["blacklist_token"]["keys"] == 4
    assert by_name["blacklist_token"]["leaks"] == 1
    assert by_name["blacklist_token"]["ttl"] in (
        {"1h_to_1d": 3, "no_ttl": 1},
        {"1m_to_1h": 3, "no_ttl": 1},
    )
    assert by_name["unrecognised"]["examples"] == ["rate_limit:weird"]
    assert by_name["unrecognised"]["keys"] == 1
    limiter = by_name["fastapi_limiter"]
    assert limiter["leaks"] == 1
    assert "203.0.113.7" not in str(limiter["leak_examples"])
    assert by_name["blacklist_token"]["memory"]["sampled_keys"] == 4
    assert "sampled estimate" in answer["memory_method"]
    assert answer["keys_examined"] == 7
    assert answer["complete"]
    assert answer["next_cursor"] is None
    # ~20 prefixes, each a SCAN over a 8-key table: the budget pays what Redis examined.
    assert answer["scanned"] < 20 * 20
    assert answer["commands"] > 0
    assert progress
    assert progress == sorted(progress)


async def test_budget_bounds_the_walk_and_cursor_resumes(
    mita_app: App, real_target: Target
) -> None:
    pipe = real_target.raw.pipeline(transaction=False)
    for i in range(1000):
        pipe.set(f"mita:blacklist:token:{i:08x}-0000-4000-8000-000000000000", "b", ex=600)
    pipe.execute()
    answers = await walk_to_the_end(mita_app, budget=5000)
    first = answers[0]
    # Each prefix is its own SCAN over all 1000 keys: one budget cannot cover them all.
    assert not first["complete"]
    assert first["next_cursor"]
    assert any("Budget-bounded" in n and "A full walk" in n for n in first["notes"])
    assert all(a["scanned"] <= 5000 for a in answers)
    assert sum(a["scanned"] for a in answers) >= 1000 * len(mita_app.scope.prefixes)
    assert keys_of(answers, "blacklist_token") == 1000
    assert answers[-1]["next_cursor"] is None


async def test_large_keyspace_answers_within_budget_and_resumes(
    mita_app: App, real_target: Target
) -> None:
    raw = real_target.raw
    for start in range(0, 50_000, 10_000):
        pipe = raw.pipeline(transaction=False)
        for i in range(start, start + 10_000):
            ip = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
            pipe.set(f"FASTAPI_LIMITER:{ip}:/login:0:0", 1, ex=60)
        pipe.execute()
    first = await summary(mita_app, budget=5_000)
    assert not first["complete"]
    assert first["scanned"] <= 5_000
    assert 0 < first["keys_examined"] <= 5_000
    # DBSIZE, then pages of at most 1000: the budget bounds the commands sent.
    assert first["commands"] <= 1 + 5 + 2 * first["keys_examined"] + 256
    [note] = [n for n in first["notes"] if "Budget-bounded" in n]
    prefixes = len(mita_app.scope.prefixes)
    assert f"about {prefixes * 50_000} keys" in note
    second = await summary(mita_app, budget=5_000, cursor=first["next_cursor"])
    assert not second["complete"]
    assert second["scanned"] <= 5_000
    assert second["next_cursor"] != first["next_cursor"]
    assert 0 < second["keys_examined"] <= 5_000
    assert keys_of([first, second], "fastapi_limiter") == (
        first["keys_examined"] + second["keys_examined"]
    )


async def test_a_cursor_from_another_tool_is_refused(mita_app: App) -> None:
    async with Client(build_server(mita_app)) as client:
        result = await client.call_tool("keyspace_summary", {"cursor": "0.0.0.0.-.00000000"})
    assert result.is_error
