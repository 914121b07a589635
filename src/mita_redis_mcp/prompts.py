"""MCP prompts: short guides for the common conversations, naming the tools to call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import Field


def why_429(
    client: Annotated[
        str,
        Field(
            description="Who is limited: an IP and User-Agent, a user id, or a limiter key",
        ),
    ] = "",
) -> str:
    """Why is this user getting 429s?"""
    who = f" The client: {client}." if client else ""
    return (
        "A user is getting HTTP 429 (too many requests). Find out why, from what Redis "
        f"holds now.{who}\n"
        "1. Call `inspect_rate_limits` with the identifier (for MITA, give the IP and "
        "User-Agent: the limiter keys hold only their hash). For each limiter key it "
        "gives the algorithm, limit, window, current count, remaining, retry-after and "
        "whether it blocks now, and MITA's progressive-penalty multiplier.\n"
        "2. If nothing matches, call `keys` with the limiter prefix to see which "
        "endpoints have keys at all.\n"
        "3. Answer: which limiter blocks, since when, until when, and whether the user "
        "is near a penalty step. Limits live in app code: say which profile value you "
        "used. Never write or delete keys to 'unblock' someone unless the user asks."
    )


def token_revoked(
    token: Annotated[str, Field(description="A raw JWT or its jti")] = "",
) -> str:
    """Was this token revoked?"""
    given = " The token or jti is in the user's message." if not token else ""
    return (
        "Find out whether a JWT was revoked (blacklisted)."
        f"{given}\n"
        "1. Call `check_blacklist` with the raw JWT or its jti (it reads jti and exp "
        "without verifying the signature; no secret needed). It checks every blacklist "
        "prefix (MITA has two), and gives the stored reason and until when.\n"
        "2. If the user wants all of a user's revoked tokens, call `list_sessions` "
        "with the user id (for MITA it shows mita:user:tokens:{uid}: revoked tokens, not "
        "sessions).\n"
        "3. Heed its warning when the blacklist shares a database whose "
        "maxmemory-policy can evict keys: an evicted entry makes a revoked token valid."
        + (f"\nToken or jti: {token}" if token else "")
    )


def cache_working() -> str:
    """Is the cache working?"""
    return (
        "Judge whether the application's cache works, honestly.\n"
        "1. Call `cache_hit_rate` (window_seconds 10 to 30). Its server_wide figure is "
        "Redis's keyspace lookup ratio for every key, not a cache hit rate: read "
        "`dominated_by` (for MITA, blacklist misses on every request) before quoting it.\n"
        "2. Per namespace, use `counters` (hits the app counted itself). Only if the user "
        "agrees to a temporary server config change, call again with "
        "observe_misses=true for key misses per namespace; a hit ratio per namespace "
        "appears only where both were measured.\n"
        "3. Call `keyspace_summary` to see whether cache keys exist at all, their TTLs, "
        "and leaks (cache entries or counters without a TTL).\n"
        "Never present a figure as a per-prefix hit rate unless the tool measured it."
    )


def filling_redis() -> str:
    """What is filling my Redis?"""
    return (
        "Find what takes the keys and the memory in this Redis.\n"
        "1. Call `info` with section 'memory' (used_memory, maxmemory, policy) and "
        "'keyspace' (keys per database).\n"
        "2. Call `keyspace_summary`: keys, types, TTLs, leaks and estimated memory per "
        "namespace, plus an 'unrecognised' bucket. When `complete` is false, call again "
        "with `cursor` until it is, or say the figures cover a part of the keyspace.\n"
        "3. Key counts there are exact; types, TTLs, leaks and memory come from a "
        "sample of each namespace (estimates scaled up from it): say so. Point at leaks "
        "(keys without a TTL where one is expected) and the biggest keys.\n"
        "4. Optionally `clients` for connections, `slowlog` and `latency` for slowness."
    )


PROMPTS: tuple[tuple[Callable[..., str], str, str], ...] = (
    (why_429, "why_429", "Why is this user getting 429s?"),
    (token_revoked, "token_revoked", "Was this token revoked?"),
    (cache_working, "cache_working", "Is the cache working?"),
    (filling_redis, "filling_redis", "What is filling my Redis?"),
)
