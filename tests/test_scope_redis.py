"""The scope kernel against real servers: Redis's own matcher is the oracle.

First the parser's reading of a glob is checked against redis-server's SCAN MATCH;
then every MATCH a scan plan sends is shown to stay inside its prefix on a real
keyspace; then each escape vector is tried through the tools (on redis, valkey and
fakeredis), and the raw client checks that nothing outside the prefixes was listed,
read, changed or deleted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from mcp import Client
from mcp.types import CallToolResult

from mita_redis_mcp.app import App
from mita_redis_mcp.errors import OutOfScope
from mita_redis_mcp.scope import ScanPlan, Scope, parse_pattern
from mita_redis_mcp.server import build_server
from tests.conftest import MakeApp, Target, error_text
from tests.servers import ServerProcess
from tests.test_scope import GlobCase, ScopeCase, glob_cases, parse_or_reject, scope_cases

pytestmark = pytest.mark.anyio

# Each example makes a few round trips to a server: a deadline per example would time
# the machine, not the code.
REDIS_EXAMPLES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def raw(redis_server: ServerProcess) -> Iterator[redis.Redis]:
    """One raw client on the real redis-server for the module's examples."""
    client = redis_server.client()
    yield client
    client.close()


def scan_all(client: redis.Redis, match: bytes) -> set[bytes]:
    """Every key SCAN MATCH returns, walked to the end in big pages."""
    found: set[bytes] = set()
    cursor = 0
    while True:
        cursor, page = client.scan(cursor, match=match, count=100_000)
        for key in page:
            assert isinstance(key, bytes)
            found.add(key)
        if int(cursor) == 0:
            return found


def seed(client: redis.Redis, keys: set[bytes] | frozenset[bytes]) -> None:
    client.flushall()
    if keys:
        client.mset(dict.fromkeys(keys, b"v"))


# -- the parser reads a glob as Redis does ---------------------------------------------


@REDIS_EXAMPLES
@given(case=glob_cases(adversarial=True))
def test_pattern_matches_exactly_what_redis_scan_match_returns(
    raw: redis.Redis, case: GlobCase
) -> None:
    pattern = parse_or_reject(case.glob.text)
    seed(raw, case.keys)
    wanted = {k for k in case.keys if pattern.matches(k)}
    assert scan_all(raw, case.glob.text) == wanted, case.glob.text
    assert scan_all(raw, pattern.to_redis()) == wanted, pattern.to_redis()


def test_parser_reads_ambiguous_classes_as_redis_does(raw: redis.Redis) -> None:
    # The readings the parser pins down where a careless one would differ.
    keys = {b"]", b"_", b"a", b"b", b"-", b"^", b"\\", b"[", b"\xff", b"\xe1", b"m"}
    seed(raw, keys)
    for text in (b"[a-]]", b"[]", b"[^]", b"[\\]]", b"[z-a]", b"[a-z]", b"[\\^a]", b"[--/]"):
        pattern = parse_pattern(text)
        assert scan_all(raw, text) == {k for k in keys if pattern.matches(k)}, text


# -- every MATCH a plan sends stays inside its prefix ----------------------------------

SEEDED = {
    b"app:x",
    b"app:\x00x",
    b"app:\r\nx",
    b"app:*",
    b"app:?",
    b"app:[1]",
    b"app:\\",
    b"app:\xff",
    b"app;x",
    b"apP:x",
    b"APP:x",
    b"ap",
    b"app",
    b"\\app:x",
    b"ap:x",
    b"appx",
    b"xapp:x",
    b" app:x",
    b"\x00app:x",
    b"app[1]:x",
    b"app1:x",
    b"app[1]*?:x",
    b"app1xy:x",
    b"app[1]*?x",
    b"app\\x",
    b"cache:x",
    b"other:secret",
}

ATTACK_PATTERNS = [
    b"*",
    b"?*",
    b"??????*",
    b"[a-z]*",
    b"[^x]*",
    b"[\x00-\x7f]*",
    b"a*",
    b"ap*",
    b"app*",
    b"app?x",
    b"app[;:]*",
    b"app[^:]*",
    b"ap[pP]:*",
    b"[aA][pP][pP]:*",
    b"app:*",
    b"app:\x00*",
    b"*x",
    b"*secret*",
    b"\\app:*",
    b"\\\\app:*",
    b"app\\:*",
    b"[]*",
    b"[^]pp:*",
    b"app[1]*",
    b"app\\[1\\]*",
    b"app[1]\\*\\?:*",
    b"app\\*",
    b"app\\\\*",
    b"app:[*]",
    b"*:*",
]

SCOPES = [
    Scope(["app:"]),
    Scope(["app:", "cache:"]),
    Scope(["app[1]*?:"]),
    Scope([b"app\\"]),
    Scope([b"app:\xff"]),
]


def scan_plans(client: redis.Redis, plans: list[ScanPlan]) -> set[bytes]:
    """The keys the plans keep of what Redis returns, checking each MATCH on the way."""
    kept: set[bytes] = set()
    for plan in plans:
        returned = scan_all(client, plan.match)
        strays = {k for k in returned if not k.startswith(plan.prefix)}
        assert not strays, (plan.match, strays)
        kept |= {k for k in returned if plan.accepts(k)}
    return kept


@pytest.mark.parametrize("scope", SCOPES, ids=lambda s: s.describe())
def test_scan_match_never_returns_a_key_outside_the_prefix(raw: redis.Redis, scope: Scope) -> None:
    seed(raw, SEEDED)
    for text in ATTACK_PATTERNS:
        try:
            plans = scope.plan_scan(text)
        except OutOfScope:
            plans = []
        pattern = parse_pattern(text)
        wanted = {k for k in SEEDED if scope.contains(k) and pattern.matches(k)}
        assert scan_plans(raw, plans) == wanted, text


@settings(REDIS_EXAMPLES, max_examples=100)
@given(case=scope_cases(adversarial=True))
def test_generated_scan_plans_stay_inside_the_prefix_on_redis(
    raw: redis.Redis, case: ScopeCase
) -> None:
    pattern = parse_or_reject(case.pattern)
    scope = Scope(case.prefixes, allow_all_keys=case.allow_all_keys)
    try:
        plans = scope.plan_scan(case.pattern)
    except OutOfScope:
        plans = []
    seed(raw, case.keys)
    wanted = {k for k in case.keys if scope.contains(k) and pattern.matches(k)}
    assert scan_plans(raw, plans) == wanted, case.pattern


# -- through the tools ---------------------------------------------------------------
#
# One MCP session per test, every vector of the attack through it: the session's
# handshake costs far more than a call.

SECRET = b"SECRET-VALUE-must-not-leak"
OUTSIDE = [b"other:secret", b"APP:x", b"ap:x", b"appx", b"app", b"app;x", b"\\app:x", b"app1:x"]
INSIDE = (b"app:", b"app[1]:")

CallTool = Callable[[str, dict[str, Any]], Awaitable[CallToolResult]]


@asynccontextmanager
async def session(app: App) -> AsyncIterator[CallTool]:
    async with Client(build_server(app)) as client:
        yield client.call_tool


Snapshot = dict[bytes, tuple[object, object, bool]]


def seed_target(target: Target, inside: Iterable[bytes] = (b"app:x",)) -> Snapshot:
    """Out-of-scope keys holding the secret, plus ``inside`` keys; return a snapshot."""
    target.raw.mset(dict.fromkeys(OUTSIDE, SECRET))
    target.raw.hset(b"other:hash", mapping={b"field": SECRET})
    target.raw.set(b"other:ttl", SECRET, ex=10_000)
    for key in inside:
        target.raw.set(key, b"in-scope")
    return snapshot(target)


def snapshot(target: Target) -> Snapshot:
    """Every out-of-scope key's type, value and whether it has a TTL."""
    state: Snapshot = {}
    for key in target.raw.scan_iter(count=1000):
        if key.startswith(INSIDE):
            continue
        kind = target.raw.type(key)
        value = target.raw.get(key) if kind == b"string" else target.raw.hgetall(key)
        state[key] = (kind, value, target.raw.ttl(key) > 0)
    return state


def assert_nothing_outside_leaked(
    result: CallToolResult, before: Snapshot, target: Target, vector: object
) -> None:
    shown = json.dumps(result.structured_content) + " ".join(
        getattr(block, "text", "") for block in result.content
    )
    assert SECRET.decode() not in shown, vector
    assert base64.b64encode(SECRET).decode() not in shown, vector
    assert snapshot(target) == before, vector


def listed(result: CallToolResult) -> set[bytes]:
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    keys: set[bytes] = set()
    for entry in result.structured_content["keys"]:
        b64 = entry["key_base64"]
        keys.add(base64.b64decode(b64) if b64 else entry["key"].encode())
    return keys


async def test_keys_star_lists_only_keys_inside_the_prefix(
    make_app: MakeApp, target: Target
) -> None:
    before = seed_target(target, [b"app:x", b"app:\x00y", b"app:\xffz"])
    async with session(make_app()) as call:
        result = await call("keys", {"pattern": "*"})
    assert listed(result) == {b"app:x", b"app:\x00y", b"app:\xffz"}
    assert_nothing_outside_leaked(result, before, target, "*")


async def test_keys_refuses_pattern_for_another_prefix(make_app: MakeApp, target: Target) -> None:
    before = seed_target(target)
    async with session(make_app()) as call:
        for pattern in ("other:*", "APP:*", "ap:*", "app;*", "\\\\app:*", "\u0430pp:*", "app"):
            result = await call("keys", {"pattern": pattern})
            assert "cannot match a key in the allowed prefixes" in error_text(result), pattern
            assert_nothing_outside_leaked(result, before, target, pattern)


async def test_keys_wildcard_cannot_reach_outside_the_prefix(
    make_app: MakeApp, target: Target
) -> None:
    inside = {b"app:x", b"app:secret"}
    before = seed_target(target, inside)
    patterns = [
        *("?pp:*", "???*", "????:*", "?*", "[a-z]pp:*", "[^x]pp:*", "[aA][pP][pP][:;]*"),
        *("[]*", "[^]*", "*:*", "*secret*", "app*", "a*", "\\app:*", "app\\:*", "*x"),
    ]
    async with session(make_app()) as call:
        for pattern in patterns:
            result = await call("keys", {"pattern": pattern})
            wanted = {k for k in inside if parse_pattern(pattern.encode()).matches(k)}
            assert listed(result) == wanted, pattern
            assert_nothing_outside_leaked(result, before, target, pattern)


async def test_keys_refuses_malformed_or_stalling_pattern(
    make_app: MakeApp, target: Target
) -> None:
    before = seed_target(target)
    vectors = [
        ("app:\\", "lone backslash"),
        ("app:[abc", "closing"),
        ("app:[a-]", "closing"),
        ("[app:*", "closing"),
        ("app:[a-\u00ff]", "ASCII"),
        ("app:" + "*a" * 9, "stall"),
    ]
    async with session(make_app()) as call:
        for pattern, message in vectors:
            result = await call("keys", {"pattern": pattern})
            assert message in error_text(result), pattern
            assert_nothing_outside_leaked(result, before, target, pattern)


async def test_keys_prefix_with_glob_characters_matches_it_literally(
    make_app: MakeApp, target: Target
) -> None:
    inside = {b"app[1]:x", b"app[1]:y"}
    before = seed_target(target, inside)
    async with session(make_app(prefixes=("app[1]:",))) as call:
        for pattern in ("*", "app\\[1\\]:*", "app?1?:*", "app*", "app[1]:*", "app1:*"):
            result = await call("keys", {"pattern": pattern})
            if pattern == "app1:*":
                assert "cannot match" in error_text(result)
            else:
                wanted = {k for k in inside if parse_pattern(pattern.encode()).matches(k)}
                assert listed(result) == wanted, pattern
            assert_nothing_outside_leaked(result, before, target, pattern)
        assert listed(await call("keys", {"pattern": "*"})) == inside
        result = await call("get", {"key": "app1:x"})
        assert "outside the allowed prefixes" in error_text(result)


ESCAPING_KEYS = [
    *("other:secret", "other:hash", "APP:x", "ap:x", "appx", "app", "app;x", "\\app:x"),
    *("\u0430pp:x", "app\uff1ax", " app:x", "\x00app:x", "*", "?pp:x", "[a]pp:x", "app*"),
]


async def test_get_refuses_key_outside_the_prefix(make_app: MakeApp, target: Target) -> None:
    before = seed_target(target)
    async with session(make_app()) as call:
        for key in ESCAPING_KEYS:
            result = await call("get", {"key": key})
            assert "outside the allowed prefixes" in error_text(result), key
            assert_nothing_outside_leaked(result, before, target, key)


BAD_KEYS: list[tuple[dict[str, Any], str]] = [
    ({"key": ""}, "at least 1 character"),
    ({"key": "app:" + "x" * 5000}, "at most 4096"),
    ({"key": base64.b64encode(b"app:" + b"x" * 5000).decode(), "key_encoding": "base64"}, "4096"),
    ({"key": "app:\ud800"}, "unicode"),
    ({"key": "=", "key_encoding": "base64"}, "not valid base64"),
    ({"key": "YXBwOng=\n", "key_encoding": "base64"}, "not valid base64"),
    ({"key": base64.b64encode(b"other:secret").decode(), "key_encoding": "base64"}, "outside"),
    ({"key": base64.b64encode(b"\xffapp:x").decode(), "key_encoding": "base64"}, "outside"),
]


async def test_get_refuses_empty_huge_or_non_utf8_key(make_app: MakeApp, target: Target) -> None:
    before = seed_target(target)
    async with session(make_app()) as call:
        for arguments, message in BAD_KEYS:
            result = await call("get", arguments)
            assert message in error_text(result), arguments["key"][:40]
            assert_nothing_outside_leaked(result, before, target, arguments["key"][:40])


async def test_get_binary_key_in_scope_via_base64(make_app: MakeApp, target: Target) -> None:
    before = seed_target(target, [b"app:\xff\x00"])
    key = base64.b64encode(b"app:\xff\x00").decode()
    async with session(make_app()) as call:
        result = await call("get", {"key": key, "key_encoding": "base64"})
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    assert result.structured_content["key_base64"] == key
    assert result.structured_content["value"]["value"] == "in-scope"
    assert_nothing_outside_leaked(result, before, target, key)


async def test_get_reads_glob_characters_in_key_literally(
    make_app: MakeApp, target: Target
) -> None:
    before = seed_target(target, [b"app:x", b"app:[x]"])
    async with session(make_app()) as call:
        for key, exists in (
            ("app:*", False),
            ("app:?", False),
            ("app:[x]", True),
            ("app:\\x", False),
        ):
            result = await call("get", {"key": key})
            assert not result.is_error, error_text(result)
            assert result.structured_content is not None
            assert result.structured_content["exists"] is exists, key
            assert_nothing_outside_leaked(result, before, target, key)


async def test_set_refuses_key_outside_the_prefix(make_app: MakeApp, target: Target) -> None:
    before = seed_target(target)
    async with session(make_app(allow_writes=True)) as call:
        for key in [*ESCAPING_KEYS, "", "app:\ud800", "app:" + "x" * 5000]:
            result = await call("set", {"key": key, "value": "pwned"})
            assert result.is_error, key
            assert target.raw.get(b"app:x") == b"in-scope"
            assert_nothing_outside_leaked(result, before, target, key)


async def test_set_key_with_crlf_or_nul_writes_one_literal_key(
    make_app: MakeApp, target: Target
) -> None:
    before = seed_target(target)
    keys = [
        "app:x\r\nSET other:secret pwned",
        "app:x\r\n*3\r\n$3\r\nSET\r\n$12\r\nother:secret\r\n$5\r\npwned\r\n",
        "app:x\x00other:secret",
        "app:x\nFLUSHALL",
    ]
    async with session(make_app(allow_writes=True)) as call:
        for written, key in enumerate(keys, start=1):
            result = await call("set", {"key": key, "value": "pwned"})
            assert not result.is_error, error_text(result)
            assert target.raw.get(key.encode()) == b"pwned", key
            assert target.raw.dbsize() == len(before) + 1 + written, key
            assert target.raw.get(b"app:x") == b"in-scope"
            assert_nothing_outside_leaked(result, before, target, key)


async def test_set_glob_key_writes_one_literal_key(make_app: MakeApp, target: Target) -> None:
    before = seed_target(target, [b"app:x", b"app:y"])
    async with session(make_app(allow_writes=True)) as call:
        result = await call("set", {"key": "app:*", "value": "w"})
    assert not result.is_error, error_text(result)
    assert target.raw.get(b"app:*") == b"w"
    assert target.raw.mget([b"app:x", b"app:y"]) == [b"in-scope", b"in-scope"]
    assert_nothing_outside_leaked(result, before, target, "app:*")


async def test_delete_refuses_whole_batch_when_one_key_is_outside(
    make_app: MakeApp, target: Target
) -> None:
    before = seed_target(target, [b"app:x", b"app:y"])
    async with session(make_app(allow_writes=True)) as call:
        for key in [*ESCAPING_KEYS, "", "app:\ud800", "app:" + "x" * 5000]:
            result = await call("delete", {"keys": ["app:x", key]})
            assert result.is_error, key
            assert target.raw.mget([b"app:x", b"app:y"]) == [b"in-scope", b"in-scope"], key
            assert_nothing_outside_leaked(result, before, target, key)


async def test_delete_glob_or_crlf_key_deletes_only_that_literal_key(
    make_app: MakeApp, target: Target
) -> None:
    async with session(make_app(allow_writes=True)) as call:
        for key in ("app:*", "app:?", "app:[xy]", "app:x\r\nDEL app:y", "app:x\x00", "app:\\x"):
            target.raw.flushall()
            before = seed_target(target, [b"app:x", b"app:y", key.encode()])
            result = await call("delete", {"keys": [key]})
            assert not result.is_error, error_text(result)
            assert result.structured_content is not None
            assert result.structured_content["deleted"] == 1, key
            assert target.raw.exists(key.encode()) == 0, key
            assert target.raw.mget([b"app:x", b"app:y"]) == [b"in-scope", b"in-scope"], key
            assert_nothing_outside_leaked(result, before, target, key)


async def test_writes_refused_when_server_is_read_only(make_app: MakeApp, target: Target) -> None:
    before = seed_target(target)
    async with session(make_app()) as call:
        for name, arguments in (
            ("set", {"key": "app:x", "value": "w"}),
            ("set", {"key": "other:secret", "value": "w"}),
            ("delete", {"keys": ["app:x"]}),
            ("delete", {"keys": ["other:secret"]}),
        ):
            result = await call(name, arguments)
            assert "writes are disabled" in error_text(result), (name, arguments)
            assert target.raw.get(b"app:x") == b"in-scope"
            assert_nothing_outside_leaked(result, before, target, (name, arguments))
