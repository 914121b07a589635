"""The domain tools over a MITA keyspace of a million keys: answers within the budget,
and honest about it.

A redis-server of this module's own holds about 1,000,000 keys written the way MITA
writes them (../shared/keyspaces/mita.md): sliding-log limiter ZSETs of a few float
timestamps with TTL W + 60, blacklisted jtis, fastapi-limiter counters, pickled cache
entries, per-user sets of revoked jtis, and 100,000 keys outside MITA's prefixes. It is
built server-side by Lua scripts of at most ``BATCH`` keys each (a few seconds).

Each tool, through the real MCP client with the ``mita`` profile's prefixes as the
scope, must stay within its budget (SCAN COUNT hints and commands spent, both bounded
by the budget, not by the keyspace), read exactly what it can name without a SCAN,
and say ``complete: false`` with a cursor when the budget stopped it. Nothing here is
timed: the bounds are on work, not on seconds.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from mita_redis_mcp.app import App
from mita_redis_mcp.demo import client_hash
from mita_redis_mcp.schema import scope_prefixes
from tests.conftest import Target, app_for, call_tool, installed
from tests.servers import ServerProcess, redis_binary, running

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# Keys per Lua script: each script stays far under Redis's busy-script threshold (5 s),
# so the server keeps answering between batches.
BATCH = 100_000
SCAN_BUDGET = 10_000  # the server's default scan_budget
MAX_ITEMS = 100  # the server's default max_items
PAGE = 1_000  # SCAN COUNT of one page (cursor.MAX_PAGE_COUNT)
SAMPLE_TOTAL = 1024  # keys keyspace_summary samples (TYPE, PTTL, MEMORY USAGE), at most
FULL_WALK = re.compile(
    r"A full walk examines about (\d+) keys \((\d+) prefixes, each a SCAN over all (\d+) keys"
)

# What the bulk of the keyspace holds, per namespace of the mita profile (and outside it).
SEEDED: dict[str, int] = {
    "rate_limit_client": 500_000,
    "blacklist_token": 200_000,
    "blacklist_legacy": 10_000,
    "fastapi_limiter": 50_000,
    "cache": 120_000,
    "user_revoked_tokens": 20_000,
    "outside": 100_000,
}

# Each key is written with the commands MITA's code sends for it (ZADD + EXPIRE, SET EX or
# PX, SADD + EXPIRE), at ``now`` = Redis's TIME when the build starts. Limiter keys:
# endpoint by i % 100 (api_upload is rare: 1 in 100), 3 requests in the first half of
# the window, member = score = the time as a float string (Lua's number-to-string, like
# str(time.time())), EXPIRE W + 60.
SEED = """
local kind, first, last, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function uuid4(h)
  return h:sub(1, 8) .. '-' .. h:sub(9, 12) .. '-4' .. h:sub(14, 16) .. '-a'
    .. h:sub(18, 20) .. '-' .. h:sub(21, 32)
end
for i = first, last do
  local h = redis.sha1hex(kind .. ':' .. i)
  if kind == 'rate_limit' then
    local slot = i % 100
    local endpoint, window = 'api_general', 3600
    if slot < 10 then endpoint, window = 'auth_login', 900
    elseif slot < 30 then endpoint, window = 'auth_token_refresh', 300
    elseif slot < 39 then endpoint, window = 'analytics_aggregate', 60
    elseif slot == 99 then endpoint, window = 'api_upload', 3600 end
    local key = 'rate_limit:' .. endpoint .. ':client:' .. h:sub(1, 16)
    local t1 = now - (i * 7 + 13) % (window / 2) - 0.001
    local t2 = now - (i * 7 + 26) % (window / 2) - 0.002
    local t3 = now - (i * 7 + 39) % (window / 2) - 0.003
    redis.call('ZADD', key, t1, t1, t2, t2, t3, t3)
    redis.call('EXPIRE', key, window + 60)
  elseif kind == 'blacklist' then
    local reason = 'blacklisted'
    if i % 3 == 0 then reason = 'user_revocation' end
    redis.call('SET', 'mita:blacklist:token:' .. uuid4(h), reason, 'EX', 600 + i % 604000)
  elseif kind == 'legacy' then
    redis.call('SET', 'revoked:jwt:' .. uuid4(h), 'blacklisted', 'EX', 600 + i % 7200)
  elseif kind == 'fastapi' then
    local ip = '10.' .. (i % 250) .. '.' .. (math.floor(i / 250) % 250) .. '.' .. (i % 7 + 1)
    local key = 'FASTAPI_LIMITER:' .. ip .. ':/api/auth/login:' .. (i % 4) .. ':0'
    redis.call('SET', key, 1 + i % 5, 'PX', 60000 + i % 240000)
  elseif kind == 'cache' then
    redis.call('SET', 'cache:' .. h:sub(1, 32), ARGV[5], 'EX', 300 + i % 3300)
  elseif kind == 'user_tokens' then
    local key = 'mita:user:tokens:' .. (100000 + i)
    local h2 = redis.sha1hex(h)
    redis.call('SADD', key, uuid4(h), uuid4(h2))
    redis.call('EXPIRE', key, 604800)
  else
    redis.call('SET', 'celery-task-meta-' .. uuid4(h), '{"status": "SUCCESS"}')
  end
end
return last
"""
KINDS = {
    "rate_limit_client": "rate_limit",
    "blacklist_token": "blacklist",
    "blacklist_legacy": "legacy",
    "fastapi_limiter": "fastapi",
    "cache": "cache",
    "user_revoked_tokens": "user_tokens",
    "outside": "outside",
}
# A small pickled dict (protocol 4), as MITA's caching layer stores a function's result.
PICKLE = b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x05spent\x94M\xd2\x04u."

# The client from a support ticket: 12 logins in 10 minutes, limit 10 per 900 s.
BLOCKED_IP = "198.51.100.77"
BLOCKED_UA = "MITA/2.5.0 (Android 15; Pixel 9)"
BLOCKED_REQUESTS = 12
# A user who revoked three tokens; the first is still blacklisted.
USER = "4f1d2c3b-5a6e-4b7c-8d9e-0a1b2c3d4e5f"
USER_JTIS = [str(uuid.UUID(int=n, version=4)) for n in (0xA1, 0xB2, 0xC3)]
JTI = USER_JTIS[0]


@dataclass(frozen=True)
class Seeded:
    """The server, and what was written to it (the truth every answer is held to)."""

    server: ServerProcess
    dbsize: int
    namespaces: dict[str, int]


@pytest.fixture(scope="module")
def million() -> Iterator[Seeded]:
    binary = installed(redis_binary())
    # A long socket timeout: redis-py's default retry would send a slow EVAL twice.
    with (
        running(binary) as server,
        redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=60) as raw,
    ):
        seconds, micros = raw.time()
        now = seconds + micros / 1_000_000
        for namespace, total in SEEDED.items():
            for first in range(1, total + 1, BATCH):
                last = min(total, first + BATCH - 1)
                raw.eval(SEED, 0, KINDS[namespace], first, last, repr(now), PICKLE)
        namespaces = dict(SEEDED)
        # The blocked client, written the way MITA's limiter writes each request.
        blocked = f"rate_limit:auth_login:client:{client_hash(BLOCKED_IP, BLOCKED_UA)}"
        with raw.pipeline(transaction=False) as pipe:
            for i in range(BLOCKED_REQUESTS):
                stamp = now - 600 + i * 45
                pipe.zadd(blocked, {str(stamp): stamp})
            pipe.expire(blocked, 900 + 60)
            pipe.set(f"mita:blacklist:token:{JTI}", "user_revocation", ex=5400)
            pipe.sadd(f"mita:user:tokens:{USER}", *USER_JTIS)
            pipe.expire(f"mita:user:tokens:{USER}", 7 * 86_400)
            pipe.execute()
        namespaces["rate_limit_client"] += 1
        namespaces["blacklist_token"] += 1
        namespaces["user_revoked_tokens"] += 1
        dbsize = int(raw.dbsize())
        # Hashes of 16 hex (and uuids from sha1) may collide; not in this seed.
        assert dbsize == sum(namespaces.values())
        assert dbsize >= 1_000_000
        yield Seeded(server, dbsize, namespaces)


@asynccontextmanager
async def mita_app(seeded: Seeded) -> AsyncIterator[App]:
    """The mita profile, its prefixes as the scope, default limits."""
    target = Target("redis", seeded.server.client(), seeded.server.url)
    app = app_for(target, profiles=("mita",), prefixes=())
    try:
        yield app
    finally:
        await app.backend.close()
        target.raw.close()


async def call(app: App, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await call_tool(app, name, arguments)
    assert not result.is_error, result.content
    answer: dict[str, Any] | None = result.structured_content
    assert answer is not None
    return answer


def scan_pages(budget: int) -> int:
    """SCAN commands a walk of ``budget`` COUNT hints sends, at most (a resumed page
    inside a page may repeat one)."""
    return math.ceil(budget / PAGE) + 1


async def test_keyspace_summary_is_budget_bounded_and_resumable(million: Seeded) -> None:
    async with mita_app(million) as app:
        prefixes = len(scope_prefixes(app.profiles))
        first = await call(app, "keyspace_summary", {})
        assert first["budget"] == SCAN_BUDGET
        assert first["complete"] is False
        assert first["next_cursor"]
        assert 0 < first["scanned"] <= SCAN_BUDGET
        assert 0 < first["keys_examined"] <= SCAN_BUDGET
        # One DBSIZE, the SCAN pages, then TYPE + PTTL + MEMORY USAGE per sampled key:
        # no command per key counted.
        assert first["keys_sampled"] <= SAMPLE_TOTAL
        assert first["commands"] <= 1 + scan_pages(SCAN_BUDGET) + 3 * first["keys_sampled"]
        note = " ".join(first["notes"])
        assert "Budget-bounded" in note
        assert "Call again with cursor" in note
        # The estimate of a full walk: every prefix's SCAN over the whole database (as
        # large as it is now: a limiter key may have expired since it was seeded).
        estimate = FULL_WALK.search(note)
        assert estimate is not None, note
        total, walked, size = (int(n) for n in estimate.groups())
        assert walked == prefixes
        assert million.dbsize - million.namespaces["fastapi_limiter"] <= size <= million.dbsize
        assert total == prefixes * size
        # Counts are lower bounds of what was seeded, never more.
        counted = {n["namespace"]: n["keys"] for n in first["namespaces"]}
        assert sum(counted.values()) <= first["keys_examined"]
        for namespace, keys in counted.items():
            assert keys <= million.namespaces.get(namespace, 0), namespace
        assert sum(counted.values()) > 0
        # Nothing outside the scope is classified (not even as unrecognised).
        assert "unrecognised" not in counted

        second = await call(app, "keyspace_summary", {"cursor": first["next_cursor"]})
        assert second["complete"] is False
        assert second["next_cursor"]
        assert second["next_cursor"] != first["next_cursor"]
        assert 0 < second["scanned"] <= SCAN_BUDGET
        assert second["keys_examined"] > 0
        assert second["commands"] <= 1 + scan_pages(SCAN_BUDGET) + 3 * second["keys_sampled"]


async def test_keyspace_summary_with_a_larger_budget_stays_within_it(million: Seeded) -> None:
    async with mita_app(million) as app:
        budget = 50_000
        answer = await call(app, "keyspace_summary", {"budget": budget})
        assert answer["budget"] == budget
        assert answer["complete"] is False
        assert answer["next_cursor"]
        assert answer["scanned"] <= budget
        assert answer["keys_examined"] <= budget
        assert answer["commands"] <= 1 + scan_pages(budget) + 3 * answer["keys_sampled"]
        total = sum(n["keys"] for n in answer["namespaces"])
        assert total == answer["keys_examined"]
        assert total <= million.dbsize - million.namespaces["outside"]
        for namespace in answer["namespaces"]:
            assert namespace["sampled"] <= min(namespace["keys"], 32)
            assert namespace["leaks_sampled"] <= namespace["sampled"]


async def test_keyspace_summary_of_one_family_counts_every_key_exactly(million: Seeded) -> None:
    """A walk of 'mita:blacklist:*' to the end: one SCAN walk of the million keys, every
    blacklisted jti counted by name, exactly as seeded; the rest from samples."""
    async with mita_app(million) as app:
        answers: list[dict[str, Any]] = []
        cursor: str | None = None
        while not answers or not answers[-1]["complete"]:
            assert len(answers) < 20, "the walk does not end"
            arguments: dict[str, Any] = {"pattern": "mita:blacklist:*", "budget": 200_000}
            if cursor is not None:
                arguments["cursor"] = cursor
            answers.append(await call(app, "keyspace_summary", arguments))
            cursor = answers[-1]["next_cursor"]
        counted = sum(
            n["keys"]
            for a in answers
            for n in a["namespaces"]
            if n["namespace"] == "blacklist_token"
        )
        assert counted == million.namespaces["blacklist_token"]
        assert {n["namespace"] for a in answers for n in a["namespaces"]} == {"blacklist_token"}
        assert sum(a["scanned"] for a in answers) <= 2 * million.dbsize
        for answer in answers:
            assert answer["commands"] <= 1 + scan_pages(200_000) + 3 * answer["keys_sampled"]
            [tokens] = answer["namespaces"] or [None]
            if tokens is not None:
                assert tokens["sampled"] == min(32, tokens["keys"])
                assert tokens["types"] == {"string": tokens["sampled"]}


async def test_rate_limits_of_one_client_are_read_without_a_scan(million: Seeded) -> None:
    async with mita_app(million) as app:
        answer = await call(
            app,
            "inspect_rate_limits",
            {"identifier": BLOCKED_IP, "user_agent": BLOCKED_UA, "endpoint": "auth_login"},
        )
        assert answer["scanned"] == 0
        assert answer["complete"] is True
        assert answer["next_cursor"] is None
        expected = f"rate_limit:auth_login:client:{client_hash(BLOCKED_IP, BLOCKED_UA)}"
        assert answer["searched"] == [expected]
        (entry,) = answer["limiters"]
        assert entry["key"] == expected
        assert entry["exists"] is True
        assert entry["limit"] == 10
        assert entry["window_seconds"] == 900
        assert entry["count"] == BLOCKED_REQUESTS
        assert entry["remaining"] == 0
        assert entry["blocked"] is True
        assert entry["retry_after_seconds"] is not None
        assert entry["retry_after_seconds"] > 0
        # TIME, then TYPE, PTTL and the log reads of one key, and a penalty counter.
        assert answer["commands"] <= 10


async def test_rate_limits_by_endpoint_stop_at_the_budget(million: Seeded) -> None:
    async with mita_app(million) as app:
        # api_upload is 1 limiter key in 100: the budget runs out before max_items.
        rare = await call(app, "inspect_rate_limits", {"endpoint": "api_upload"})
        assert rare["complete"] is False
        assert rare["next_cursor"]
        assert rare["scanned"] == SCAN_BUDGET
        found = rare["limiters"]
        assert 0 < len(found) < MAX_ITEMS
        for entry in found:
            assert entry["key"].startswith("rate_limit:api_upload:client:")
            assert entry["limit"] == 10
            assert entry["window_seconds"] == 3600
            assert entry["count"] == 3
            assert entry["remaining"] == 7
            assert entry["blocked"] is False
        # TIME, the SCAN pages, up to 5 commands per limiter (and 3 per penalty counter).
        assert rare["commands"] <= 1 + scan_pages(SCAN_BUDGET) + 8 * len(found)

        again = await call(
            app, "inspect_rate_limits", {"endpoint": "api_upload", "cursor": rare["next_cursor"]}
        )
        assert again["scanned"] <= SCAN_BUDGET
        assert again["complete"] is False
        assert again["next_cursor"] != rare["next_cursor"]

        # auth_login is 1 in 10: max_items stops the walk first, and says so too.
        common = await call(app, "inspect_rate_limits", {"endpoint": "auth_login"})
        assert common["complete"] is False
        assert common["next_cursor"]
        assert common["scanned"] <= SCAN_BUDGET
        assert len(common["limiters"]) == MAX_ITEMS
        assert common["commands"] <= 1 + scan_pages(SCAN_BUDGET) + 8 * MAX_ITEMS


async def test_check_blacklist_is_exact_in_a_handful_of_commands(million: Seeded) -> None:
    async with mita_app(million) as app:
        listed = await call(app, "check_blacklist", {"jti": JTI})
        assert listed["blacklisted"] is True
        (current,) = [e for e in listed["entries"] if e["prefix"] == "mita:blacklist:token:"]
        assert current["blacklisted"] is True
        assert current["reason"] == "user_revocation"
        assert 0 < current["ttl_seconds"] <= 5400
        assert listed["commands"] <= 10

        absent = await call(app, "check_blacklist", {"jti": str(uuid.UUID(int=7, version=4))})
        assert absent["blacklisted"] is False
        assert all(not e["blacklisted"] for e in absent["entries"])
        assert absent["commands"] <= 10


async def test_list_sessions_says_mita_has_none_and_shows_revoked_tokens(
    million: Seeded,
) -> None:
    async with mita_app(million) as app:
        answer = await call(app, "list_sessions", {"user": USER})
        assert answer["sessions"] == []
        assert "keeps no sessions in Redis" in answer["summary"]
        (mita,) = answer["no_session_store"]
        assert mita["profile"] == "mita"
        footprint = mita["user_footprint"]
        assert footprint["revoked_tokens"] == len(USER_JTIS)
        (revoked,) = [k for k in footprint["keys"] if k["namespace"] == "user_revoked_tokens"]
        assert sorted(revoked["members"]) == sorted(USER_JTIS)
        assert revoked["members_complete"] is True
        # The per-user limiter keys can only be found by a SCAN: it stops at the budget.
        assert footprint["scanned"] <= SCAN_BUDGET
        assert footprint["complete"] is False
        assert "search stopped at the scan budget" in answer["summary"]
        assert answer["commands"] <= scan_pages(SCAN_BUDGET) + 10


async def test_keys_with_a_pattern_stays_within_the_scan_budget(million: Seeded) -> None:
    async with mita_app(million) as app:
        answer = await call(app, "keys", {"pattern": "rate_limit:api_upload:*"})
        assert answer["complete"] is False
        assert answer["next_cursor"]
        assert answer["scanned"] <= SCAN_BUDGET
        assert len(answer["keys"]) < MAX_ITEMS
        for entry in answer["keys"]:
            assert re.fullmatch(r"rate_limit:api_upload:client:[0-9a-f]{16}", entry["key"])
        # The SCAN pages, and TYPE + PTTL per key returned.
        assert answer["commands"] <= scan_pages(SCAN_BUDGET) + 2 * len(answer["keys"])
