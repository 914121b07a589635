"""The embedded default: a small MITA-like keyspace in an in-process fake Redis.

The layout follows ../shared/keyspaces/mita.md: sliding-log rate limits (ZSET of
request times), fastapi-limiter counters, the JWT blacklist (current and legacy
prefixes), revoked tokens per user, blacklist metrics, a pickled cache entry with its
``meta:`` hit counter, the e-mail queue and a task result. A few keys outside MITA's
prefixes show what the scope keeps out. Times are relative to now, so TTLs and
windows look live.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime

from mita_redis_mcp.backend import Backend, Command

DEMO_USER = "7c0e9a52-3f1d-4d6b-9a51-2f8e4b7d1c10"
DEMO_JTI = "5f2b8c1e-9d4a-4e7b-8c3f-1a2b3c4d5e6f"
DEMO_CACHE_KEY = "cache:" + hashlib.md5(b"get_budget_summary:42").hexdigest()  # noqa: S324
# The client the demo's login limiter has blocked (an IP and User-Agent from a ticket).
BLOCKED_IP = "203.0.113.7"
BLOCKED_UA = "MITA/2.4.1 (iPhone; iOS 18.1)"


def client_hash(ip: str, user_agent: str) -> str:
    """MITA's limiter client id: sha256(ip + ':' + sha256(ua)[:8])[:16]."""
    ua = hashlib.sha256(user_agent.encode()).hexdigest()[:8]
    return hashlib.sha256(f"{ip}:{ua}".encode()).hexdigest()[:16]


def demo_commands(now: float | None = None) -> list[Command]:
    """The write commands that build the demo keyspace."""
    now = time.time() if now is None else now
    blocked = client_hash(BLOCKED_IP, BLOCKED_UA)
    calm = client_hash("198.51.100.23", "MITA/2.4.1 (Android 15)")
    commands: list[Command] = []

    # Sliding-log limiter: auth_login allows 10 per 900 s; this client sent 12.
    login = f"rate_limit:auth_login:client:{blocked}"
    for i in range(12):
        stamp = now - 600 + i * 45
        commands.append(("ZADD", login, stamp, str(stamp)))
    commands.append(("EXPIRE", login, 900 + 60))
    general = f"rate_limit:api_general:client:{calm}"
    for i in range(37):
        stamp = now - 3000 + i * 80
        commands.append(("ZADD", general, stamp, str(stamp)))
    commands.append(("EXPIRE", general, 3600 + 60))
    commands.append(("ZADD", "rate_limit:health_test:ip:127.0.0.1", now - 5, str(now - 5)))

    # fastapi-limiter fixed window (the raw IP is part of the key).
    commands.append(("SET", "FASTAPI_LIMITER:203.0.113.7:/api/auth/login:0:0", 5, "PX", 41_000))

    # JWT blacklist, current and legacy prefixes, with the per-user index and metrics.
    commands.append(("SET", f"mita:blacklist:token:{DEMO_JTI}", "user_revocation", "EX", 5400))
    commands.append(
        (
            "SET",
            "mita:blacklist:token:0b9e4c2a-6f1d-4b8e-a7c3-9d2e1f0a4b5c",
            "admin_revocation:ops@mita.finance",
            "EX",
            86_400,
        )
    )
    commands.append(
        ("SET", "revoked:jwt:3e7a1c9b-2d4f-4a6e-8b1c-5f9d2e7a0c3b", "blacklisted", "EX", 3000)
    )
    commands.append(("SADD", f"mita:user:tokens:{DEMO_USER}", DEMO_JTI))
    commands.append(("EXPIRE", f"mita:user:tokens:{DEMO_USER}", 7 * 86_400))
    commands.append(
        (
            "HSET",
            "mita:blacklist:metrics",
            "total_blacklisted",
            1834,
            "access_tokens_blacklisted",
            1402,
            "refresh_tokens_blacklisted",
            432,
        )
    )

    # A cache entry as MITA's caching layer writes it: a pickle (never unpickled here).
    cache_key = DEMO_CACHE_KEY
    commands.append(
        (
            "SET",
            cache_key,
            b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x05spent\x94M\xd2\x04u.",
            "EX",
            300,
        )
    )
    commands.append(
        # MITA keeps the hit counter under the cache key without its "cache:" prefix.
        (
            "HSET",
            "meta:" + cache_key.removeprefix("cache:"),
            "access_count",
            57,
            "last_accessed",
            datetime.fromtimestamp(now - 12, UTC).isoformat(),
        )
    )

    # Queues and task results.
    commands.append(("ZADD", "mita:email:queue", now + 30, "job-1842"))
    commands.append(
        (
            "HSET",
            "mita:email:queue:jobs",
            "job-1842",
            json.dumps(
                {"template": "password_reset", "recipient": "dana@example.com", "attempts": 0}
            ),
        )
    )
    commands.append(
        (
            "SET",
            "task_result:8d1f",
            json.dumps({"status": "done", "task": "monthly_report", "user_id": 42}),
            "EX",
            86_400,
        )
    )

    # Outside MITA's prefixes: never visible through the tools.
    commands.append(("SET", "session:do-not-show", "someone else's secret"))
    commands.append(("SET", "celery-task-meta-1", "{}"))
    return commands


async def seed(backend: Backend) -> None:
    """Fill the in-process demo store."""
    await backend.load(demo_commands())
