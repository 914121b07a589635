"""Key-schema profiles: what an app's keys mean, as data (mita, limits, fastapi-users, ...).

A profile tells the domain tools which keys are rate limiters (and their limits, which
live in app code), sessions, blacklists, caches and queues; which parts are personal
data or credentials; and which keys should expire. Pure: nothing here talks to Redis.
"""

from mita_redis_mcp.schema.loader import ProfileError, builtin_names, load_profiles, parse_profiles
from mita_redis_mcp.schema.model import (
    ClientDigest,
    HitCounter,
    KeyField,
    KeyMatch,
    Limit,
    Namespace,
    Penalty,
    PenaltyStep,
    PrefixLimit,
    Profile,
    RateLimit,
    classify,
    scope_prefixes,
)
from mita_redis_mcp.schema.template import KeyTemplate

__all__ = [
    "ClientDigest",
    "HitCounter",
    "KeyField",
    "KeyMatch",
    "KeyTemplate",
    "Limit",
    "Namespace",
    "Penalty",
    "PenaltyStep",
    "PrefixLimit",
    "Profile",
    "ProfileError",
    "RateLimit",
    "builtin_names",
    "classify",
    "load_profiles",
    "parse_profiles",
    "scope_prefixes",
]
