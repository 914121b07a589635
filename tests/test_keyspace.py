"""keyspace_summary on a MITA-like keyspace: leaks, unrecognised keys, budget and cursor,
progress notifications received by a real MCP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client

from mita_redis_mcp.app import App
from mita_redis_mcp.schema import builtin_names, load_profiles
from mita_redis_mcp.server import build_server
from mita_redis_mcp.tools.keyspace import MAX_BUDGET, SAMPLE_PER_NAMESPACE, _Namer
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
    # Fewer keys than a sample holds: every key is read, the sample figures are exact.
    assert by_name["blacklist_token"]["sampled"] == 4
    assert by_name["blacklist_token"]["leaks_sampled"] == 1
    assert by_name["blacklist_token"]["leaks_estimated"] == 1
    assert by_name["blacklist_token"]["ttl"] in (
        {"1h_to_1d": 3, "no_ttl": 1},
        {"1m_to_1h": 3, "no_ttl": 1},
    )
    assert by_name["unrecognised"]["examples"] == ["rate_limit:weird"]
    assert by_name["unrecognised"]["keys"] == 1
    limiter = by_name["fastapi_limiter"]
    assert limiter["leaks_sampled"] == limiter["leaks_estimated"] == 1
    assert "203.0.113.7" not in str(limiter["leak_examples"])
    assert by_name["blacklist_token"]["memory"]["sampled_keys"] == 4
    assert "sampled estimate" in answer["memory_method"]
    assert answer["keys_examined"] == answer["keys_sampled"] == 7
    assert "EXACT" in answer["sampling"]
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
    # DBSIZE, then pages of at most 1000, then one pipeline over the sample.
    assert first["commands"] <= 1 + 5 + 3 * first["keys_sampled"]
    assert first["keys_sampled"] <= SAMPLE_PER_NAMESPACE
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


async def test_counts_are_exact_and_the_rest_is_a_labelled_sample(
    mita_app: App, real_target: Target
) -> None:
    pipe = real_target.raw.pipeline(transaction=False)
    leaked: set[str] = set()
    for i in range(1000):
        key = f"mita:blacklist:token:{i:08x}-0000-4000-8000-000000000000"
        if i % 10 == 0:
            pipe.set(key, "b")  # no TTL: a leak
            leaked.add(key)
        else:
            pipe.set(key, "b", ex=600)
    for i in range(40):
        pipe.zadd(f"rate_limit:auth_login:client:{i:016x}", {"1.0": 1.0})
        pipe.expire(f"rate_limit:auth_login:client:{i:016x}", 960)
    pipe.execute()
    [answer] = await walk_to_the_end(mita_app, budget=MAX_BUDGET)
    by_name = {n["namespace"]: n for n in answer["namespaces"]}
    tokens = by_name["blacklist_token"]
    assert tokens["keys"] == 1000  # exact, by name
    assert tokens["sampled"] == SAMPLE_PER_NAMESPACE
    assert tokens["types"] == {"string": SAMPLE_PER_NAMESPACE}
    assert sum(tokens["ttl"].values()) == SAMPLE_PER_NAMESPACE
    assert tokens["ttl"].get("no_ttl", 0) == tokens["leaks_sampled"] <= len(leaked)
    assert tokens["leaks_estimated"] == round(tokens["leaks_sampled"] / 32 * 1000)
    assert len(tokens["leak_examples"]) == min(tokens["leaks_sampled"], 5)
    assert tokens["memory"]["sampled_keys"] == SAMPLE_PER_NAMESPACE
    limiter = by_name["rate_limit_client"]
    assert limiter["keys"] == 40
    assert limiter["sampled"] == 32
    assert limiter["types"] == {"zset": 32}
    assert limiter["leaks_sampled"] == limiter["leaks_estimated"] == 0
    assert limiter["ttl"] == {"1m_to_1h": 32}
    assert answer["keys_examined"] == 1040
    assert answer["keys_sampled"] == 64
    # DBSIZE, two pages per prefix (1040 keys, pages of 1000), one pipeline of 3 x 64.
    prefixes = len(mita_app.scope.prefixes)
    assert answer["commands"] <= 1 + 2 * prefixes + 3 * 64


async def test_a_pattern_summarises_one_family_in_one_walk(
    mita_app: App, real_target: Target
) -> None:
    pipe = real_target.raw.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"mita:blacklist:token:{i:08x}-0000-4000-8000-000000000000", "b", ex=600)
        pipe.set(f"revoked:jwt:{i:08x}-0000-4000-8000-000000000000", "b", ex=600)
    pipe.execute()
    first = await summary(mita_app, pattern="mita:blacklist:*", budget=100)
    assert not first["complete"]
    answers = [first]
    while not answers[-1]["complete"]:
        answers.append(
            await summary(
                mita_app, pattern="mita:blacklist:*", budget=100, cursor=answers[-1]["next_cursor"]
            )
        )
    assert keys_of(answers, "blacklist_token") == 300
    assert keys_of(answers, "blacklist_legacy") == 0  # outside the pattern
    # One walk over the table of 600 keys, not one per allowed prefix.
    assert sum(a["scanned"] for a in answers) <= 3 * 600 < len(mita_app.scope.prefixes) * 600
    async with Client(build_server(mita_app)) as client:
        result = await client.call_tool(
            "keyspace_summary", {"pattern": "revoked:*", "cursor": first["next_cursor"]}
        )
    assert result.is_error  # a cursor of another pattern


async def test_a_cursor_from_another_tool_is_refused(mita_app: App) -> None:
    async with Client(build_server(mita_app)) as client:
        result = await client.call_tool("keyspace_summary", {"cursor": "0.0.0.0.-.00000000"})
    assert result.is_error


_PROFILES = tuple(load_profiles(builtin_names()))
_NAMERS = (_Namer(_PROFILES), _Namer(tuple(load_profiles(["mita"]))))
_PIECES = sorted(
    {ns.pattern.split("{", 1)[0].encode() for p in _PROFILES for ns in p.namespaces}
    | {b":", b"/", b"-", b"_", b"0", b"f", b"x", b"\n", b"\xff", b"0123456789abcdef"}
)


@given(
    st.lists(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8), min_size=1, max_size=20)
)
def test_one_regex_per_page_names_every_key_as_label_does(pages: list[list[bytes]]) -> None:
    """Counting a page tells each key's namespace with one regex match; it must agree
    with ``label`` (each namespace's template tried in turn) on every key."""
    keys = [b"".join(parts) for parts in pages]
    for namer in _NAMERS:
        names = namer.names(keys)
        assert names is not None
        for key, name in zip(keys, names, strict=True):
            if name != "slow":
                assert namer.entry(name) == namer.label(key), key
