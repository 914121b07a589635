"""cache_hit_rate against a real redis-server: exact figures from known traffic, the
tool's own probes excluded, notify-keyspace-events restored, cashews and MITA counters."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from cashews import Cache

from mita_redis_mcp.app import App
from mita_redis_mcp.backend import OnNode
from mita_redis_mcp.tools.cache import CacheHitRateResult, cache_hit_rate
from tests.conftest import Target, app_for

pytestmark = pytest.mark.anyio

JTI = "0b5c3f9e-3a61-4c55-9d2e-6f1c2a7b8e90"
MD5 = "0123456789abcdef0123456789abcdef"

cashews = Cache()


@cashews.hit(ttl="1h", cache_hits=100)
async def load_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@pytest.fixture
async def mita_app(real_target: Target) -> AsyncIterator[App]:
    app = app_for(real_target, profiles=("mita",), prefixes=())
    yield app
    await app.backend.close()


async def run_with_traffic(
    app: App, traffic: Callable[[aioredis.Redis], Awaitable[None]], **arguments: Any
) -> CacheHitRateResult:
    """Run the tool while ``traffic`` runs inside its window: after its first INFO
    stats sample, on a client of its own."""
    first_sample = anyio.Event()
    info = app.backend.info_by_node

    async def watched(section: str | None) -> list[OnNode[str]]:
        nodes = await info(section)
        if section == "stats":
            first_sample.set()
        return nodes

    app.backend.info_by_node = watched  # type: ignore[method-assign]
    url = app.settings.redis_url.get_secret_value()
    result: list[CacheHitRateResult] = []

    async def tool() -> None:
        result.append(await cache_hit_rate(app, **arguments))

    async with aioredis.Redis.from_url(url) as client, anyio.create_task_group() as group:
        group.start_soon(tool)
        await first_sample.wait()
        await traffic(client)
    return result[0]


async def test_server_wide_figure_is_exact_and_excludes_own_probes(mita_app: App) -> None:
    raw = aioredis.Redis.from_url(mita_app.settings.redis_url.get_secret_value())
    await raw.set("mita:blacklist:token:" + JTI, "blacklisted", ex=600)
    await raw.hset("meta:" + MD5, "access_count", 5)  # a counter the tool reads twice
    await raw.aclose()

    async def traffic(client: aioredis.Redis) -> None:
        for _ in range(7):
            await client.get("mita:blacklist:token:" + JTI)
        for i in range(5):
            await client.exists(f"mita:blacklist:token:{i}")

    answer = await run_with_traffic(mita_app, traffic, window_seconds=1)
    assert answer.server_wide is not None
    assert (answer.server_wide.hits, answer.server_wide.misses) == (7, 5)
    assert answer.server_wide.ratio == round(7 / 12, 4)
    assert "not a cache hit rate" in answer.what_it_is
    assert any("blacklist_token" in d and "miss" in d for d in answer.dominated_by)
    assert answer.misses_by_namespace is None
    assert answer.per_namespace == []
    cache_counter = next(c for c in answer.counters if c.namespace == "cache")
    assert (cache_counter.total, cache_counter.window_hits) == (5, 0)
    assert answer.complete


@pytest.mark.parametrize("previous", ["", "Kx"])
async def test_observe_misses_counts_per_namespace_and_restores_flags(
    mita_app: App, real_target: Target, previous: str
) -> None:
    real_target.raw.config_set("notify-keyspace-events", previous)
    found = real_target.raw.config_get("notify-keyspace-events")["notify-keyspace-events"]
    real_target.raw.set("cache:" + MD5, b"\x80\x04cached", ex=300)
    real_target.raw.set("outside:key", "x")

    async def traffic(client: aioredis.Redis) -> None:
        for i in range(3):
            await client.get(f"mita:blacklist:token:00000000-0000-4000-8000-00000000000{i}")
        for _ in range(2):
            await client.get("cache:" + "f" * 32)  # a cache miss
        for _ in range(4):  # MITA's hit path: GET cache:{key}, then HINCRBY meta:{key}
            await client.get("cache:" + MD5)
            await client.hincrby("meta:" + MD5, "access_count", 1)
        await client.get("outside:missing")

    answer = await run_with_traffic(mita_app, traffic, window_seconds=1, observe_misses=True)
    assert answer.misses_by_namespace is not None
    misses = {m.namespace: m.misses for m in answer.misses_by_namespace}
    assert misses == {"blacklist_token": 3, "cache": 2, "outside_scope": 1}
    ratio = next(r for r in answer.per_namespace if r.namespace == "cache")
    assert (ratio.hits, ratio.misses, ratio.hit_ratio) == (4, 2, round(4 / 6, 4))
    assert answer.server_wide is not None
    assert answer.server_wide.misses == 6
    assert answer.server_wide.hits == 4
    after = real_target.raw.config_get("notify-keyspace-events")["notify-keyspace-events"]
    assert after == found
    assert answer.notify_keyspace_events == found


async def test_observe_misses_restores_flags_when_cancelled(
    mita_app: App, real_target: Target
) -> None:
    real_target.raw.config_set("notify-keyspace-events", "Kg")
    found = real_target.raw.config_get("notify-keyspace-events")["notify-keyspace-events"]
    # Cancelled mid-window: flags restored, and no wait for the command timeout.
    with anyio.fail_after(2), anyio.move_on_after(0.3):
        await cache_hit_rate(mita_app, window_seconds=5, observe_misses=True)
    after = real_target.raw.config_get("notify-keyspace-events")["notify-keyspace-events"]
    assert after == found


async def test_cashews_hit_counters_driven_for_real(real_target: Target) -> None:
    # cashews' defaults: the keys are hit:tests.test_cache:load_user:user_id:1 and
    # the same with :counter. The profile adds no prefix: the user names theirs.
    app = app_for(real_target, profiles=("cashews",), prefixes=("hit:tests.",))
    cashews.setup(real_target.url)
    await load_user(1)  # miss: computed and stored
    await load_user(1)  # hit: counter 1
    assert sorted(real_target.raw.keys()) == [
        b"hit:tests.test_cache:load_user:user_id:1",
        b"hit:tests.test_cache:load_user:user_id:1:counter",
    ]

    async def traffic(_client: aioredis.Redis) -> None:
        for _ in range(3):
            await load_user(1)

    try:
        answer = await run_with_traffic(app, traffic, window_seconds=1)
    finally:
        with warnings.catch_warnings():  # cashews closes redis-py with the old close()
            warnings.simplefilter("ignore", DeprecationWarning)
            await cashews.close()
        await app.backend.close()
    counters = {c.namespace: c for c in answer.counters if c.profile == "cashews"}
    assert set(counters) == {"hit", "hit_no_args"}
    counter = counters["hit"]
    assert (counter.counters_read, counter.total, counter.window_hits) == (1, 4, 3)
    assert counters["hit_no_args"].counters_read == 0
    assert answer.server_wide is not None
    assert answer.server_wide.hits == 3


async def test_unknown_namespace_is_refused(mita_app: App) -> None:
    from mita_redis_mcp.errors import InvalidInput

    with pytest.raises(InvalidInput, match="known"):
        await cache_hit_rate(mita_app, window_seconds=1, namespaces=["nope"])
