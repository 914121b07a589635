"""A MITA-like keyspace (../shared/keyspaces/mita.md), seeded fast and deterministically.

Shares of the keys (``--keys`` N in total):

    40%  rate_limit:{endpoint}:client:{h16}      ZSET, 1-3 timestamps, TTL window+60 s
    25%  mita:blacklist:token:{uuid4}            STRING 'blacklisted'..., TTL <= 7 days
    10%  cache:{md5} / cache:query:{md5}         STRING, pickle bytes, no TTL
     8%  FASTAPI_LIMITER:{ip}:{path}:0:0         STRING counter, PX window
     1%  mita:user:tokens:{uid}                  SET of revoked jtis
     1%  revoked:jwt:{uuid4}                     STRING, EX
     1%  meta:{key}                              HASH access_count / last_accessed
    14%  outside the scope: session:..., celery-task-meta-..., app:user:...:profile

plus the fixed keys the benchmark reads (``GET_KEY``, ``RATE_KEY``, ``BIG_STRING``,
``BIG_HASH``).
Strings without TTL go in by MSET, 1000 keys per command, the rest one key per
command; all through a raw socket in batches of 10,000 commands (``resp.RawPipe``).
TTLs are stretched by an hour so that nothing expires while the benchmark runs.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from resp import RawPipe

GET_JTI = "0b0d9100-4c2f-4f5e-9a53-2b8c6f1d7e01"
GET_KEY = f"mita:blacklist:token:{GET_JTI}"
RATE_KEY = "rate_limit:auth_login:client:0b0d91004c2f4f5e"
GET_VALUE = b"blacklisted"
BIG_STRING = "cache:bench:big-string"
BIG_HASH = "cache:bench:big-hash"
WALK_DENSE = "rate_limit:*"
WALK_SPARSE = "rate_limit:auth_register:*"
KEYS_PAGE = "rate_limit:*"

# MITA's sliding-log endpoints and windows (seconds), weighted by how often they are hit.
ENDPOINTS: tuple[tuple[str, int, float], ...] = (
    ("api_general", 3600, 50),
    ("auth_login", 900, 15),
    ("auth_token_refresh", 300, 12),
    ("api_upload", 3600, 5),
    ("auth_password_reset", 1800, 3),
    ("auth_register", 3600, 2.5),
    ("analytics_behavioral_insights", 60, 4),
    ("analytics_seasonal_patterns", 60, 2.5),
    ("analytics_aggregate", 60, 3),
    ("analytics_anomalies", 60, 3),
)
LIMITER_PATHS = ("/api/auth/login", "/api/auth/register", "/api/transactions", "/api/ai/chat")
PICKLE_HEAD = b"\x80\x04\x95"
CHUNK = 1000
# Seeded TTLs are stretched by this much, so that no key expires during a run.
STABLE_TTL = 3600


@dataclass(frozen=True)
class Seeded:
    keys: int
    seconds: float
    used_memory_mb: float
    big_string_bytes: int
    big_hash_fields: int
    shares: dict[str, int]


class Control(Protocol):
    """What seeding asks of the server besides the keys: a redis.Redis, or a cluster's
    primaries together (``cluster.Primaries``)."""

    def flushdb(self) -> Any: ...
    def info(self, section: str) -> Any: ...
    def dbsize(self) -> Any: ...


def seed(
    client: redis.Redis | Control,
    port: int,
    total: int,
    *,
    big_string_bytes: int,
    big_hash_fields: int,
    pipe_for: Callable[[int], RawPipe] = RawPipe,
) -> Seeded:
    rng = random.Random(4)
    shares = {
        "rate_limit": total * 40 // 100,
        "blacklist": total * 25 // 100,
        "cache": total * 10 // 100,
        "fastapi_limiter": total * 8 // 100,
        "user_tokens": total // 100,
        "revoked_jwt": total // 100,
        "meta": total // 100,
    }
    shares["outside_scope"] = total - sum(shares.values())
    started = time.perf_counter()
    client.flushdb()
    now = time.time()
    endpoints = [e for e, _, _ in ENDPOINTS]
    weights = [w for _, _, w in ENDPOINTS]
    windows = {e: w for e, w, _ in ENDPOINTS}
    revocations = ("blacklisted", "user_revocation", "admin_revocation:42")
    with pipe_for(port) as pipe:
        for endpoint in rng.choices(endpoints, weights, k=shares["rate_limit"]):
            key = f"rate_limit:{endpoint}:client:{rng.getrandbits(64):016x}"
            stamps = [now - rng.random() * windows[endpoint] for _ in range(rng.randint(1, 3))]
            pipe.add("ZADD", key, *[x for s in stamps for x in (s, repr(s))])
            pipe.add("EXPIRE", key, windows[endpoint] + 60 + STABLE_TTL)
        for _ in range(shares["blacklist"]):
            key = f"mita:blacklist:token:{_uuid(rng)}"
            ttl = rng.randint(STABLE_TTL, 604_800)
            pipe.add("SET", key, rng.choice(revocations), "EX", ttl)
        for i in range(shares["fastapi_limiter"]):
            ip = f"203.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            key = f"FASTAPI_LIMITER:{ip}:{rng.choice(LIMITER_PATHS)}:0:0"
            pipe.add(
                "SET", key, rng.randint(1, 10), "PX", 1000 * STABLE_TTL + rng.randint(0, 60_000)
            )
        for uid in range(shares["user_tokens"]):
            jtis = [_uuid(rng) for _ in range(rng.randint(1, 4))]
            pipe.add("SADD", f"mita:user:tokens:{uid}", *jtis)
            pipe.add("EXPIRE", f"mita:user:tokens:{uid}", STABLE_TTL + 604_800)
        for uid in range(shares["meta"]):
            key = f"meta:cache:{rng.getrandbits(128):032x}"
            pipe.add("HSET", key, "access_count", uid % 97, "last_accessed", now)
        _mset(pipe, _cache_items(rng, shares["cache"]))
        revoked = (
            (f"revoked:jwt:{_uuid(rng)}", b"blacklisted") for _ in range(shares["revoked_jwt"])
        )
        _mset(pipe, revoked)
        _mset(pipe, _outside_items(rng, shares["outside_scope"]))
        _seed_fixed(pipe, big_string_bytes, big_hash_fields)
    seconds = time.perf_counter() - started
    memory = client.info("memory")
    return Seeded(
        keys=int(client.dbsize()),
        seconds=round(seconds, 1),
        used_memory_mb=round(int(memory["used_memory"]) / 2**20, 1),
        big_string_bytes=big_string_bytes,
        big_hash_fields=big_hash_fields,
        shares=shares,
    )


def _seed_fixed(pipe: RawPipe, big_string_bytes: int, big_hash_fields: int) -> None:
    pipe.add("SET", GET_KEY, GET_VALUE, "EX", 7 * 86400)
    stamp = time.time()
    stamps = [stamp - 60 * i for i in range(12)]  # 12 logins in 15 min: over the limit
    pipe.add("ZADD", RATE_KEY, *[x for s in stamps for x in (s, repr(s))])
    pipe.add("EXPIRE", RATE_KEY, 960 + STABLE_TTL)
    pipe.add(
        "HSET", "mita:blacklist:metrics", "total_blacklisted", 1, "access_tokens_blacklisted", 1
    )
    line = b"2026-07-21T10:00:00Z GET /api/transactions 200 user=12345 took=12ms\n"
    piece = (line * (2**20 // len(line) + 1))[: 2**20]
    pipe.add("DEL", BIG_STRING, BIG_HASH)
    for written in range(0, big_string_bytes, len(piece)):
        pipe.add("APPEND", BIG_STRING, piece[: big_string_bytes - written])
        pipe.flush()  # one megabyte at a time
    for start in range(0, big_hash_fields, CHUNK):
        fields: list[str] = []
        for i in range(start, min(start + CHUNK, big_hash_fields)):
            fields += [f"user:{i}", f'{{"spent":{i % 1000},"currency":"EUR"}}']
        pipe.add("HSET", BIG_HASH, *fields)


def _mset(pipe: RawPipe, items: Iterator[tuple[str, bytes]]) -> None:
    batch: list[str | bytes] = []
    for key, value in items:
        batch += [key, value]
        if len(batch) >= 2 * CHUNK:
            pipe.add("MSET", *batch)
            batch = []
    if batch:
        pipe.add("MSET", *batch)


def _cache_items(rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    for i in range(count):
        prefix = "cache:query:" if i % 4 == 0 else "cache:"
        payload = PICKLE_HEAD + rng.randbytes(rng.randint(60, 400))
        yield f"{prefix}{rng.getrandbits(128):032x}", payload


def _outside_items(rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    for i in range(count):
        match i % 3:
            case 0:
                yield f"session:{rng.getrandbits(128):032x}", b'{"user_id": 1, "csrf": "x"}'
            case 1:
                yield f"celery-task-meta-{_uuid(rng)}", b'{"status": "SUCCESS", "result": null}'
            case _:
                yield f"app:user:{i}:profile", b'{"name": "someone", "plan": "free"}'


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
