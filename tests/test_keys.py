"""keys: SCAN-only listing inside the allowed prefixes, bounded per call, resumable to the end."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from mita_redis_mcp.app import App
from tests.conftest import (
    Answer,
    MakeApp,
    Target,
    answer_of,
    app_for,
    call_tool,
    error_text,
    follow,
)

pytestmark = pytest.mark.anyio


async def list_keys(app: App, **arguments: Any) -> Answer:
    return answer_of(await call_tool(app, "keys", arguments))


async def walk_all(app: App, most_calls: int = 500, **arguments: Any) -> list[Answer]:
    return await follow(app, "keys", most_calls, **arguments)


def names(answers: list[Answer]) -> set[str]:
    return {entry["key"] for answer in answers for entry in answer["keys"]}


def seed(raw: redis.Redis, keys: list[str]) -> None:
    pipe = raw.pipeline(transaction=False)
    for key in keys:
        pipe.set(key, "1")
    pipe.execute()


async def test_keys_lists_matches_with_type_and_ttl(make_app: MakeApp, target: Target) -> None:
    target.raw.set("app:str", "v", ex=300)
    target.raw.sadd("app:set", "m")
    target.raw.xadd("app:stream", {"f": "v"})
    target.raw.hset("app:hash", "f", "v")
    target.raw.set("other:str", "v")
    answer = await list_keys(make_app(), pattern="app:s*")
    entries = {e["key"]: e for e in answer["keys"]}
    assert set(entries) == {"app:str", "app:set", "app:stream"}
    assert {k: e["type"] for k, e in entries.items()} == {
        "app:str": "string",
        "app:set": "set",
        "app:stream": "stream",
    }
    ttl = entries["app:str"]["ttl_seconds"]
    assert ttl is not None
    assert 0 < ttl <= 300
    assert entries["app:set"]["ttl_seconds"] is None
    assert answer["complete"] is True
    assert answer["next_cursor"] is None
    assert answer["prefixes"] == ["app:"]


@pytest.mark.parametrize("kind", ["string", "hash", "list", "set", "zset", "stream"])
async def test_keys_type_filter(make_app: MakeApp, target: Target, kind: str) -> None:
    target.raw.set("app:string", "v")
    target.raw.hset("app:hash", "f", "v")
    target.raw.rpush("app:list", "v")
    target.raw.sadd("app:set", "v")
    target.raw.zadd("app:zset", {"v": 1})
    target.raw.xadd("app:stream", {"f": "v"})
    target.raw.hset("other:hash", "f", "v")
    answer = await list_keys(make_app(), pattern="*", type=kind)
    assert [(e["key"], e["type"]) for e in answer["keys"]] == [(f"app:{kind}", kind)]


async def test_keys_follows_cursor_over_two_prefixes_to_every_key(
    make_app: MakeApp, target: Target
) -> None:
    wanted = [f"a:user:{i}" for i in range(1250)] + [f"b:job:{i}" for i in range(1250)]
    seed(target.raw, [*wanted, *(f"c:skip:{i}" for i in range(200))])
    answers = await walk_all(make_app(prefixes=("a:", "b:")), limit=200)
    assert names(answers) == set(wanted)
    assert all(len(a["keys"]) <= 200 for a in answers)
    assert answers[0]["prefixes"] == ["a:", "b:"]
    assert len(answers) >= 2500 // 200


async def test_keys_scan_budget_bounds_each_call(make_app: MakeApp, target: Target) -> None:
    wanted = [f"a:{i}" for i in range(600)] + [f"b:{i}" for i in range(600)]
    seed(target.raw, wanted)
    answers = await walk_all(make_app(prefixes=("a:", "b:"), scan_budget=250))
    assert all(0 < a["scanned"] <= 250 for a in answers)
    # The limit (100 keys) is not what ends these calls: the budget is.
    assert any(len(a["keys"]) < 100 and a["next_cursor"] for a in answers)
    assert names(answers) == set(wanted)


async def test_keys_cursor_inside_a_scan_page_loses_no_key(
    make_app: MakeApp, target: Target
) -> None:
    wanted = [f"app:{i}" for i in range(300)]
    seed(target.raw, wanted)
    # One SCAN page (COUNT up to 1000) holds far more than 7 matches: every cursor but
    # the last points inside a page.
    answers = await walk_all(make_app(), limit=7)
    assert all(len(a["keys"]) <= 7 for a in answers)
    assert len(answers) >= 300 // 7
    assert names(answers) == set(wanted)


async def test_keys_pattern_filters_inside_the_prefix(make_app: MakeApp, target: Target) -> None:
    seed(target.raw, [f"app:user:{i}" for i in range(30)] + [f"app:job:{i}" for i in range(30)])
    answers = await walk_all(make_app(), pattern="app:user:1?", limit=3)
    assert names(answers) == {f"app:user:{i}" for i in range(10, 20)}


async def test_keys_refuses_cursor_from_another_pattern(make_app: MakeApp, target: Target) -> None:
    seed(target.raw, [f"app:a:{i}" for i in range(20)] + [f"app:b:{i}" for i in range(20)])
    app = make_app()
    first = await list_keys(app, pattern="app:a:*", limit=5)
    assert first["next_cursor"] is not None
    other = await call_tool(app, "keys", {"pattern": "app:b:*", "cursor": first["next_cursor"]})
    assert "belongs to a different call" in error_text(other)
    typed = await call_tool(
        app, "keys", {"pattern": "app:a:*", "type": "string", "cursor": first["next_cursor"]}
    )
    assert "belongs to a different call" in error_text(typed)


async def test_keys_refuses_malformed_cursor(make_app: MakeApp, target: Target) -> None:
    result = await call_tool(make_app(), "keys", {"pattern": "app:*", "cursor": "0.0.0"})
    assert "cursor is malformed" in error_text(result)


async def test_keys_default_pattern_lists_every_prefix_and_nothing_else(
    make_app: MakeApp, target: Target
) -> None:
    inside = ["a:1", "a:2", "b:1", "b:nested:2"]
    seed(target.raw, [*inside, "c:1", "ab", "A:1", "xa:1", "b"])
    answers = await walk_all(make_app(prefixes=("a:", "b:")))
    assert names(answers) == set(inside)
    assert answers[-1]["complete"] is True


async def test_keys_refuses_pattern_outside_the_prefixes(make_app: MakeApp, target: Target) -> None:
    target.raw.set("secret:1", "v")
    result = await call_tool(make_app(), "keys", {"pattern": "secret:*"})
    assert "cannot match a key in the allowed prefixes" in error_text(result)


async def test_keys_binary_key_has_base64(make_app: MakeApp, target: Target) -> None:
    key = b"app:\x80\xffbin"
    target.raw.set(key, "v")
    answer = await list_keys(make_app())
    assert [(e["key"], e["key_base64"]) for e in answer["keys"]] == [
        ("app:\\x80\\xffbin", "YXBwOoD/Ymlu")
    ]


async def test_star_over_many_prefixes_finishes_a_small_database_in_one_call(
    make_app: MakeApp, target: Target
) -> None:
    # Each prefix is its own walk over the table: on a small database the pages are
    # sized by DBSIZE, so twenty prefixes do not exhaust the budget on empty pages.
    prefixes = tuple(f"p{i:02}:" for i in range(20))
    for prefix in prefixes[::4]:
        target.raw.set(f"{prefix}k", "v")
    result = await call_tool(make_app(prefixes=prefixes), "keys", {})
    answer = result.structured_content
    assert answer is not None
    assert answer["complete"] is True
    assert sorted(k["key"] for k in answer["keys"]) == [f"{p}k" for p in prefixes[::4]]
    assert answer["scanned"] <= 20 * 10


async def test_keys_that_look_like_the_protocol_come_back_exactly(real_target: Target) -> None:
    """Keys that look like RESP, binary keys, and pages longer than one socket read come
    out of the backend's SCAN, TYPE/PTTL and GETRANGE exactly as stored."""
    odd = [b"app:\r\n*2\r\n$1\r\nx", b"app:$-1\r\n", b"app:\xff\x00\r", b"app:" + b"k" * 300]
    real_target.raw.mset({key: key for key in odd})
    real_target.raw.mset({b"app:%05d:" % i + b"v" * 200: b"1" for i in range(2000)})
    expected = set(real_target.raw.scan_iter(match=b"app:*", count=1000))
    app = app_for(real_target, prefixes=("app:",))
    try:
        found: list[bytes] = []
        cursor = 0
        while True:
            cursor, page = await app.backend.scan(cursor, b"app:*", 1000)
            found += page
            if cursor == 0:
                break
        assert len(expected) == 2004
        assert set(found) == expected
        metas = await app.backend.types_and_ttls([*odd, b"app:missing"])
        assert metas == [("string", -1)] * 4 + [("none", -2)]
        for key in odd:
            assert await app.backend.getrange(key, 0, -1) == key
    finally:
        await app.backend.close()
