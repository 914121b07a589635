"""inspect_rate_limits against keyspaces written the way each limiter writes them.

`limits` and fastapi-limiter are driven themselves, and every field of the answer is
checked against the library's own view (get_window_stats, test(), the 429 it sends).
MITA's sliding log is written exactly as its simple_rate_limiter.py does (one pipeline:
ZREMRANGEBYSCORE, ZADD, ZCARD, EXPIRE) at chosen timestamps, so expectations come from
the stored scores and Redis's TIME, never from the local clock.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI
from fastapi_limiter import FastAPILimiter
from fastapi_limiter.depends import RateLimiter
from limits import RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)

from mita_redis_mcp.app import App
from tests.conftest import MakeApp, Target, app_for, call_tool, error_text

pytestmark = pytest.mark.anyio

Answer = dict[str, Any]

IP = "203.0.113.7"
UA = "MITA/2.1 (Android 14)"
# MITA's client field: sha256(f"{ip}:{sha256(ua)[:8]}")[:16], hex digests.
CLIENT = hashlib.sha256(f"{IP}:{hashlib.sha256(UA.encode()).hexdigest()[:8]}".encode()).hexdigest()[
    :16
]


async def inspect(app: App, **arguments: Any) -> Answer:
    result = await call_tool(app, "inspect_rate_limits", arguments)
    assert not result.is_error, error_text(result)
    content: Answer | None = result.structured_content
    assert content is not None
    return content


def only(answer: Answer) -> Answer:
    assert len(answer["limiters"]) == 1, answer["limiters"]
    entry: Answer = answer["limiters"][0]
    return entry


def server_time(raw: redis.Redis) -> float:
    seconds, micros = raw.time()
    return float(seconds) + micros / 1_000_000


def log_of(raw: redis.Redis, key: str) -> list[tuple[bytes, float]]:
    return cast(list[tuple[bytes, float]], raw.zrange(key, 0, -1, withscores=True))


def mita_hit(raw: redis.Redis, key: str, limit: int, window: int, at: float) -> bool:
    """One request through MITA's sliding log at time ``at``: True when accepted."""
    pipe = raw.pipeline()
    pipe.zremrangebyscore(key, 0, at - window)
    pipe.zadd(key, {str(at): at})
    pipe.zcard(key)
    pipe.expire(key, window + 60)
    count = pipe.execute()[2]
    return bool(count <= limit)


@pytest.fixture
async def apps(real_target: Target) -> AsyncIterator[list[App]]:
    made: list[App] = []
    yield made
    for app in made:
        await app.backend.close()


def make(real_target: Target, apps: list[App], *profiles: str) -> App:
    app = app_for(real_target, prefixes=(), profiles=profiles)
    apps.append(app)
    return app


# -- MITA's sliding log ---------------------------------------------------------------


async def test_mita_blocked_client_found_by_ip_and_user_agent(
    real_target: Target, apps: list[App]
) -> None:
    raw = real_target.raw
    key = f"rate_limit:auth_login:client:{CLIENT}"  # L = 10, W = 900
    now = server_time(raw)
    # Two requests that have left the window since (they linger: ZCARD would count them).
    for at in (now - 950, now - 940):
        mita_hit(raw, key, 10, 900, at)
    accepted = [mita_hit(raw, key, 10, 900, now - 800 + 10 * i) for i in range(12)]
    assert accepted.count(False) >= 2  # the refused ones are logged too
    assert raw.zcard(key) == 14

    app = make(real_target, apps, "mita")
    answer = await inspect(app, identifier=IP, user_agent=UA, endpoint="auth_login")
    entry = only(answer)
    t = answer["server_time"]
    assert abs(t - server_time(raw)) < 5
    scores = [s for _, s in log_of(raw, key) if s > t - 900]
    assert entry["key"] == key
    assert entry["algorithm"] == "sliding_log_zset"
    assert (entry["limit"], entry["window_seconds"]) == (10, 900)
    assert entry["count"] == len(scores) == 12
    assert entry["remaining"] == 0
    assert entry["blocked"] is True
    assert entry["retry_after_seconds"] == pytest.approx(scores[12 - 10] + 900 - t, abs=1e-6)
    assert entry["reset_seconds"] == pytest.approx(scores[0] + 900 - t, abs=1e-6)
    assert 900 < entry["ttl_seconds"] <= 960
    assert entry["penalty"] is None
    assert answer["complete"] is True
    assert answer["scanned"] == 0  # every field was known: no SCAN
    # TIME, then TYPE PTTL ZCOUNT ZRANGEBYSCORE ZREVRANGEBYSCORE, then the penalty key's
    # TYPE PTTL GET.
    assert answer["commands"] == 9

    # The answer is MITA's own verdict: a request on a copy of the log is refused now
    # and just before retry_after, accepted just after.
    retry = entry["retry_after_seconds"]
    for at, expected in ((t, False), (t + retry - 1e-3, False), (t + retry + 1e-3, True)):
        copy = "rate_limit:auth_login:client:0000000000000000"
        raw.delete(copy)
        raw.zadd(copy, dict(log_of(raw, key)))
        assert mita_hit(raw, copy, 10, 900, at) is expected


async def test_mita_client_hash_and_user_keys_at_twice_the_limit(
    real_target: Target, apps: list[App]
) -> None:
    raw = real_target.raw
    now = server_time(raw)
    for i in range(15):
        mita_hit(raw, "rate_limit:auth_login:user:42", 20, 900, now - 100 + i)
    for i in range(3):
        mita_hit(raw, f"rate_limit:api_upload:client:{CLIENT}", 10, 3600, now - 50 + i)
    app = make(real_target, apps, "mita")

    user = only(await inspect(app, identifier="42"))
    assert user["namespace"] == "rate_limit_user"
    assert (user["limit"], user["window_seconds"]) == (20, 900)  # 2 x auth_login's 10
    assert (user["count"], user["remaining"], user["blocked"]) == (15, 5, False)
    assert user["retry_after_seconds"] is None

    client = only(await inspect(app, identifier=CLIENT))
    assert client["key"] == f"rate_limit:api_upload:client:{CLIENT}"
    assert (client["limit"], client["count"], client["remaining"]) == (10, 3, 7)


async def test_mita_expired_window_counts_nothing(real_target: Target, apps: list[App]) -> None:
    raw = real_target.raw
    key = f"rate_limit:analytics_aggregate:client:{CLIENT}"  # L = 20, W = 60
    now = server_time(raw)
    for i in range(25):
        mita_hit(raw, key, 20, 60, now - 120 + i)  # all older than the window now
    entry = only(await inspect(make(real_target, apps, "mita"), identifier=CLIENT))
    assert entry["exists"] is True
    assert (entry["count"], entry["remaining"], entry["blocked"]) == (0, 20, False)
    assert entry["reset_seconds"] is None
    assert raw.zcard(key) == 25  # read-only: the lingering entries are still there


async def test_mita_key_without_ttl_is_reported(real_target: Target, apps: list[App]) -> None:
    raw = real_target.raw
    key = f"rate_limit:auth_register:client:{CLIENT}"  # L = 5, W = 3600
    now = server_time(raw)
    raw.zadd(key, {str(now - 10): now - 10, str(now - 5): now - 5})
    entry = only(await inspect(make(real_target, apps, "mita"), key=key))
    assert entry["ttl_seconds"] is None
    assert any("no TTL" in note for note in entry["notes"])
    assert (entry["count"], entry["remaining"]) == (2, 3)


async def test_mita_penalty_multiplier(real_target: Target, apps: list[App]) -> None:
    raw = real_target.raw
    now = server_time(raw)
    mita_hit(raw, f"rate_limit:auth_login:client:{CLIENT}", 10, 900, now - 1)
    raw.set(f"penalties:auth_login:{CLIENT}", 8, ex=3600)
    entry = only(await inspect(make(real_target, apps, "mita"), identifier=CLIENT))
    penalty = entry["penalty"]
    assert penalty["violations"] == 8
    assert penalty["limit_multiplier"] == pytest.approx(1 / 2.5)
    assert penalty["penalized_limit"] == 4  # int(10 / 2.5)
    assert 3590 < penalty["ttl_seconds"] <= 3600
    assert entry["limit"] == 10  # the sliding log's own limit, stated as such
    assert any("2.5" in note for note in entry["notes"])


async def test_mita_health_probe_is_labelled_and_left_out_for_a_client(
    real_target: Target, apps: list[App]
) -> None:
    raw = real_target.raw
    now = server_time(raw)
    mita_hit(raw, "rate_limit:health_test:ip:127.0.0.1", 100, 60, now)
    mita_hit(raw, f"rate_limit:auth_login:client:{CLIENT}", 10, 900, now)
    app = make(real_target, apps, "mita")
    everything = await inspect(app)
    probes = [e for e in everything["limiters"] if e["probe"]]
    assert [p["key"] for p in probes] == ["rate_limit:health_test:ip:127.0.0.1"]
    assert probes[0]["limit"] is None
    assert probes[0]["blocked"] is None
    assert len(everything["limiters"]) == 2
    assert all(not e["probe"] for e in (await inspect(app, identifier=CLIENT))["limiters"])


async def test_key_that_is_not_a_limiter_is_refused(real_target: Target, apps: list[App]) -> None:
    app = make(real_target, apps, "mita")
    result = await call_tool(app, "inspect_rate_limits", {"key": "mita:blacklist:metrics"})
    assert "not a rate limiter" in error_text(result)
    result = await call_tool(app, "inspect_rate_limits", {"key": "other:thing"})
    assert "outside the allowed prefixes" in error_text(result)


# -- limits ---------------------------------------------------------------------------


@pytest.fixture
def storage(real_target: Target) -> Iterator[RedisStorage]:
    store = RedisStorage(real_target.url)
    yield store
    store.storage.close()


async def test_limits_fixed_window_matches_the_library(
    real_target: Target, apps: list[App], storage: RedisStorage
) -> None:
    limiter = FixedWindowRateLimiter(storage)
    item = RateLimitItemPerMinute(5)
    results = [limiter.hit(item, IP, "app.views.login") for _ in range(7)]
    assert results.count(False) == 2
    app = make(real_target, apps, "limits")
    answer = await inspect(app, identifier=IP)
    entry = only(answer)
    stats = limiter.get_window_stats(item, IP, "app.views.login")
    assert entry["key"] == "LIMITS:LIMITER/203.0.x.x/app.views.login/5/1/minute"
    assert entry["fields"]["key_func"] == "203.0.x.x"
    assert entry["algorithm"] == "fixed_window"
    assert (entry["limit"], entry["window_seconds"]) == (5, 60)
    assert entry["count"] == 7
    assert entry["remaining"] == stats.remaining == 0
    assert entry["blocked"] is (not limiter.test(item, IP, "app.views.login")) is True
    # limits reads TTL in whole seconds: its reset is within a second of PTTL's.
    expected_reset = stats.reset_time - time.time()
    assert entry["reset_seconds"] == pytest.approx(expected_reset, abs=1.5)
    assert entry["retry_after_seconds"] == entry["reset_seconds"]

    shown = only(await inspect(app, identifier=IP, reveal_personal=True))
    assert shown["key"] == "LIMITS:LIMITER/203.0.113.7/app.views.login/5/1/minute"
    assert only(await inspect(app, endpoint="app.views.login"))["count"] == 7
    assert (await inspect(app, endpoint="app.views.other"))["limiters"] == []


async def test_limits_fixed_window_not_blocked(
    real_target: Target, apps: list[App], storage: RedisStorage
) -> None:
    limiter = FixedWindowRateLimiter(storage)
    item = RateLimitItemPerMinute(5)
    for _ in range(3):
        assert limiter.hit(item, "k1", "app.api")
    entry = only(await inspect(make(real_target, apps, "limits"), identifier="k1"))
    stats = limiter.get_window_stats(item, "k1", "app.api")
    assert (entry["count"], entry["remaining"], entry["blocked"]) == (3, stats.remaining, False)
    assert entry["retry_after_seconds"] is None


async def test_limits_moving_window_matches_the_library(
    real_target: Target, apps: list[App], storage: RedisStorage
) -> None:
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerMinute(3)
    assert [limiter.hit(item, "k2", "app.api") for _ in range(4)] == [True, True, True, False]
    answer = await inspect(make(real_target, apps, "limits"), identifier="k2")
    entry = only(answer)
    stats = limiter.get_window_stats(item, "k2", "app.api")
    assert entry["algorithm"] == "moving_window_list"
    assert (entry["count"], entry["remaining"]) == (3, stats.remaining)
    assert entry["blocked"] is (not limiter.test(item, "k2", "app.api")) is True
    # Both are the oldest stored timestamp + W (the library's Lua rounds it to 14
    # significant digits on the way out: 0.1 ms at today's epoch).
    assert answer["server_time"] + entry["retry_after_seconds"] == pytest.approx(
        stats.reset_time, abs=2e-4
    )
    assert entry["reset_seconds"] == entry["retry_after_seconds"]


async def test_limits_moving_window_with_room(
    real_target: Target, apps: list[App], storage: RedisStorage
) -> None:
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerMinute(5)
    for _ in range(2):
        limiter.hit(item, "k3", "app.api")
    answer = await inspect(make(real_target, apps, "limits"), identifier="k3")
    entry = only(answer)
    stats = limiter.get_window_stats(item, "k3", "app.api")
    assert (entry["count"], entry["remaining"], entry["blocked"]) == (2, stats.remaining, False)
    assert answer["server_time"] + entry["reset_seconds"] == pytest.approx(
        stats.reset_time, abs=2e-4
    )


def shift(raw: redis.Redis, keys: list[str], seconds: float) -> None:
    """Let ``seconds`` pass for these keys' TTLs (what a limiter sees of time)."""
    for key in keys:
        pttl = raw.pttl(key)
        if pttl > 0:
            raw.pexpire(key, max(1, pttl - round(seconds * 1000)))


async def test_limits_sliding_window_counter_rotates_without_writing(
    real_target: Target, apps: list[App], storage: RedisStorage
) -> None:
    raw = real_target.raw
    limiter = SlidingWindowCounterRateLimiter(storage)
    item = RateLimitItemPerMinute(10)
    for _ in range(8):
        assert limiter.hit(item, "k4", "app.api")
    current = "LIMITS:{LIMITER/k4/app.api/10/1/minute}"
    previous = current + "/-1"
    # 87 s later: the current window ended 27 s ago. The library would rename it on
    # its next read; the tool must compute that, not do it.
    shift(raw, [current], 87)
    before = (raw.get(current), raw.exists(previous))
    entry = only(await inspect(make(real_target, apps, "limits"), identifier="k4"))
    assert (raw.get(current), raw.exists(previous)) == before
    assert entry["algorithm"] == "sliding_window_counter"
    assert (entry["previous_window_count"], entry["current_window_count"]) == (8, 0)
    assert 8 * raw.pttl(current) / 60_000 <= entry["weighted_count"] <= 8 * 33 / 60
    stats = limiter.get_window_stats(item, "k4", "app.api")  # the library renames here
    assert raw.exists(previous)
    assert (entry["count"], entry["remaining"], entry["blocked"]) == (4, stats.remaining, False)
    assert entry["reset_seconds"] == pytest.approx(stats.reset_time - time.time(), abs=0.5)


async def test_limits_sliding_window_counter_blocked_retry_after(
    real_target: Target, apps: list[App], storage: RedisStorage
) -> None:
    raw = real_target.raw
    limiter = SlidingWindowCounterRateLimiter(storage)
    item = RateLimitItemPerMinute(10)
    for _ in range(8):
        limiter.hit(item, "k5", "app.api")
    current = "LIMITS:{LIMITER/k5/app.api/10/1/minute}"
    previous = current + "/-1"
    shift(raw, [current], 70)  # ended 10 s ago: 8 * 50/60 = 6.67 weighted
    hits = [limiter.hit(item, "k5", "app.api") for _ in range(5)]
    assert hits.count(False) >= 1
    app = make(real_target, apps, "limits")
    answer = await inspect(app, identifier="k5")
    entry = only(answer)
    assert entry["blocked"] is (not limiter.test(item, "k5", "app.api")) is True
    assert entry["remaining"] == limiter.get_window_stats(item, "k5", "app.api").remaining == 0
    retry = entry["retry_after_seconds"]
    assert retry is not None
    assert retry > 2  # 8 * (50 - t) / 60 + 4 < 10 from t = 5 s on
    # A second before retry_after the library still refuses; a second after, it
    # accepts. Real time that passed since the answer counts towards the shift.
    elapsed = server_time(raw) - answer["server_time"]
    shift(raw, [current, previous], retry - 1.0 - elapsed)
    assert not limiter.test(item, "k5", "app.api")
    shift(raw, [current, previous], 2.0)
    assert limiter.test(item, "k5", "app.api")


# -- fastapi-limiter ------------------------------------------------------------------


async def asgi_get(app: FastAPI, path: str, forwarded_for: str) -> tuple[int, dict[str, str]]:
    """One GET through the ASGI app: the limiter dependency runs as in production."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"x-forwarded-for", forwarded_for.encode()), (b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    messages: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return int(start["status"]), headers


@pytest.fixture
async def limited_api(real_target: Target) -> AsyncIterator[tuple[FastAPI, aioredis.Redis]]:
    client = aioredis.Redis.from_url(real_target.url)
    api = FastAPI()

    @api.get("/login", dependencies=[Depends(RateLimiter(times=2, seconds=60))])
    async def login() -> dict[str, str]:
        return {"ok": "yes"}

    yield api, client
    await client.aclose()
    FastAPILimiter.redis = None


@pytest.mark.parametrize(
    ("profile", "prefix"), [("fastapi-limiter", None), ("mita", "FASTAPI_LIMITER")]
)
async def test_fastapi_limiter_count_and_reset_without_a_guessed_limit(
    real_target: Target,
    apps: list[App],
    limited_api: tuple[FastAPI, aioredis.Redis],
    profile: str,
    prefix: str | None,
) -> None:
    api, client = limited_api
    if prefix is None:
        await FastAPILimiter.init(client)
    else:
        await FastAPILimiter.init(client, prefix=prefix)
    statuses = [await asgi_get(api, "/login", f"{IP}, 10.0.0.1") for _ in range(3)]
    assert [s for s, _ in statuses] == [200, 200, 429]
    retry_header = int(statuses[2][1]["retry-after"])

    answer = await inspect(make(real_target, apps, profile), identifier=IP, endpoint="/login")
    entry = only(answer)
    raw_key = next(iter(real_target.raw.scan_iter(match="*:/login:*")))
    pttl = real_target.raw.pttl(raw_key)
    assert raw_key.decode().startswith(f"{prefix or 'fastapi-limiter'}:{IP}:/login:")
    assert IP not in entry["key"]
    assert "203.0.x.x" in entry["key"]
    assert entry["algorithm"] == "fastapi_limiter"
    assert entry["count"] == 2  # it stops counting once it refuses
    assert (entry["limit"], entry["remaining"], entry["blocked"]) == (None, None, None)
    assert entry["window_seconds"] is None
    assert any("decorator" in note for note in entry["notes"])
    assert pttl / 1000 <= entry["reset_seconds"] <= retry_header
    assert entry["reset_seconds"] == entry["ttl_seconds"]


# -- the basic path on every server ---------------------------------------------------


async def test_mita_sliding_log_on_every_server(target: Target, make_app: MakeApp) -> None:
    raw = target.raw
    key = f"rate_limit:auth_password_reset:client:{CLIENT}"  # L = 3, W = 1800
    now = server_time(raw)
    raw.zadd(key, {str(now - 2000 + i): now - 2000 + i for i in range(2)})  # lingering
    raw.zadd(key, {str(now - 100 + i): now - 100 + i for i in range(4)})
    raw.expire(key, 1860)
    raw.zadd("rate_limit:auth_login:client:ffffffffffffffff", {"1": 1.0})
    app = make_app(prefixes=(), profiles=("mita",))
    answer = await inspect(app, identifier=CLIENT)
    entry = only(answer)
    t = answer["server_time"]
    assert (entry["count"], entry["remaining"], entry["blocked"]) == (4, 0, True)
    assert entry["retry_after_seconds"] == pytest.approx(now - 100 + 1 + 1800 - t, abs=1e-3)
    assert answer["complete"] is True
    assert answer["next_cursor"] is None


async def test_paging_over_many_limiter_keys(target: Target, make_app: MakeApp) -> None:
    raw = target.raw
    now = server_time(raw)
    expected = set()
    for i in range(25):
        key = f"rate_limit:api_general:client:{i:016x}"
        raw.zadd(key, {str(now - 1): now - 1})
        expected.add(key)
    app = make_app(prefixes=(), profiles=("mita",))
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(20):
        answer = await inspect(app, endpoint="api_general", limit=10, cursor=cursor)
        assert len(answer["limiters"]) <= 10
        seen += [e["key"] for e in answer["limiters"]]
        cursor = answer["next_cursor"]
        if cursor is None:
            break
        assert answer["complete"] is False
    assert set(seen) == expected
    assert all(e == 1 for e in (seen.count(k) for k in expected))
