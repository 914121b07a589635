"""Property-based fuzzing of every tool's inputs against a real redis-server seeded with
keys inside and outside the scope.

Out-of-scope keys and their values carry the marker ``0UT``. For every input tried:
no answer carries the marker (no out-of-scope key or value was read or listed), every
key an answer names is in scope, every call returns a result, and an error is a short
message without a traceback. Over the whole test: redis-server's MONITOR never saw the
marker (no command ever named an out-of-scope key), and the out-of-scope keys are
byte-for-byte as seeded (DUMP and PTTL), with no key written outside the scope.

The write tools added last get the same checks: delete_pattern through its token flow
(dry run, then the dry run's own token, replayed, another pattern's, mutated, forged or
noise: only the own token deletes, exactly what its dry run matched), undo after it,
and undo over a journal file tampered with (keys out of scope, broken lines, odd TTLs,
times and DUMPs). A tool exception the server did not turn into a clear error fails.

Each test keeps one MCP session and drives it from hypothesis through a blocking
portal. The inputs tried per tool are printed at the end of the module (run with -s,
or read the log line ``fuzz: inputs tried``).
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.types import CallToolResult

from mita_redis_mcp import cursor as cursors
from mita_redis_mcp.app import App
from mita_redis_mcp.schema import load_profiles, parse_profiles, scope_prefixes
from mita_redis_mcp.scope import MAX_KEY_BYTES, parse_pattern
from mita_redis_mcp.server import build_server
from mita_redis_mcp.tools.keyspace import MAX_BUDGET
from tests.conftest import Target, app_for
from tests.servers import ServerProcess
from tests.test_scope import globs, tricky_bytes

log = logging.getLogger(__name__)

MARK = "0UT"
SECRET = b"S3CRET-0UT-VALUE"
PROFILES = ("mita", "limits", "fastapi-users")
PREFIXES = scope_prefixes(load_profiles(PROFILES))
NOW = time.time()
JTI = str(uuid.UUID(int=7))

INSIDE: dict[bytes, tuple[str, Any]] = {
    b"rate_limit:auth_login:client:0123456789abcdef": (
        "zset",
        {str(NOW - i): NOW - i for i in range(12)},
    ),
    b"rate_limit:api_general:user:42": ("zset", {str(NOW): NOW}),
    b"penalties:auth_login:0123456789abcdef": ("string", b"4"),
    b"mita:blacklist:token:" + JTI.encode(): ("string", b"logout"),
    b"mita:user:tokens:42": ("set", [JTI.encode(), b"other-jti"]),
    b"fastapi_users_token:tok-abc": ("string", b"user-1"),
    b"LIMITS:LIMITER/1.2.3.4/api/10/1/minute": ("string", b"3"),
    b"cache:greeting": ("string", b"hello"),
    b"cache:\x00\xff\r\n": ("string", b"\x00binary\xff"),
    b"cache:hash": ("hash", {b"f": b"v", b"\xff": b"\x00"}),
    b"cache:list": ("list", [b"a", b"b", b"c"]),
    b"cache:stream": ("stream", {b"f": b"v"}),
    b"meta:abc": ("hash", {b"access_count": b"3"}),
    b"tag:t": ("set", [b"cache:greeting"]),
}

OUTSIDE: dict[bytes, tuple[str, Any]] = {
    b"other:0UT:secret": ("string", SECRET),
    b"0UT": ("string", SECRET),
    b"Rate_limit:auth_login:client:0UT": ("zset", {SECRET: 1.0}),
    b"rate_limit0UT": ("string", SECRET),
    b"\x00rate_limit:0UT": ("string", SECRET),
    b" cache:0UT": ("string", SECRET),
    b"\xffcache:0UT": ("hash", {SECRET: SECRET}),
    b"cach:0UT": ("list", [SECRET]),
    b"tag0UT": ("set", [SECRET]),
    b"mita:blacklist:metric0UT": ("string", SECRET),
    b"mita:blacklist:token0UT": ("string", SECRET),
    b"LIMITS:LIMITER0UT": ("string", SECRET),
    b"fastapi_users_token0UT": ("string", SECRET),
    b"app:0UT": ("stream", {SECRET: SECRET}),
}


def examples(count: int) -> settings:
    """Each example is a round trip to a real server: no per-example deadline."""
    return settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


TRIED: Counter[str] = Counter()
ESCAPES: Counter[str] = Counter()


# -- the session, the seed and the checks ------------------------------------------------


def seed(raw: redis.Redis, keys: dict[bytes, tuple[str, Any]]) -> None:
    for key, (kind, value) in keys.items():
        if kind == "string":
            raw.set(key, value)
        elif kind == "hash":
            raw.hset(key, mapping=value)
        elif kind == "list":
            raw.rpush(key, *value)
        elif kind == "set":
            raw.sadd(key, *value)
        elif kind == "zset":
            raw.zadd(key, value)
        else:
            raw.xadd(key, value)


@dataclass
class Session:
    """One MCP session on the seeded server, called synchronously from hypothesis."""

    portal: BlockingPortal
    client: Client
    app: App
    raw: redis.Redis
    outside: dict[bytes, tuple[bytes | None, int]] = field(default_factory=dict)

    def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        TRIED[tool] += 1
        result: CallToolResult = self.portal.call(self.client.call_tool, tool, arguments)
        self.check(tool, arguments, result)
        return result

    def check(self, tool: str, arguments: dict[str, Any], result: CallToolResult) -> None:
        texts = [getattr(block, "text", "") for block in result.content]
        dumped = json.dumps(result.structured_content, ensure_ascii=False)
        everything = " ".join([*texts, dumped])
        for secret in (SECRET, base64.b64encode(SECRET)):
            if secret.decode() in everything:
                ESCAPES[tool] += 1
            assert secret.decode() not in everything, (tool, arguments)
        asked = MARK in json.dumps(arguments, ensure_ascii=False) or any(
            MARK.encode() in key for key in _decoded_keys(arguments)
        )
        if not asked and MARK in everything:
            ESCAPES[tool] += 1
            pytest.fail(f"{tool} answered about an out-of-scope key: {arguments!r}")
        if result.is_error:
            message = " ".join(texts)
            assert message
            assert "Traceback" not in message
            assert len(message) < 1200, (tool, len(message), message[:300])
            return
        for named in _named_keys(result.structured_content):
            if not self.app.scope.contains(named):
                ESCAPES[tool] += 1
            assert self.app.scope.contains(named), (tool, named, arguments)

    def snapshot_outside(self) -> dict[bytes, tuple[bytes | None, int]]:
        return {key: (self.raw.dump(key), self.raw.pttl(key)) for key in OUTSIDE}

    def verify_no_escape(self) -> None:
        """Every out-of-scope key is as seeded; no key exists outside the scope but them."""
        after = self.snapshot_outside()
        changed = [key for key in OUTSIDE if after[key] != self.outside[key]]
        ESCAPES["writes"] += len(changed)
        assert not changed, changed
        stray = [
            key
            for key in self.raw.scan_iter(count=1000)
            if key not in OUTSIDE and not self.app.scope.contains(key)
        ]
        ESCAPES["writes"] += len(stray)
        assert not stray, stray


def _decoded_keys(arguments: dict[str, Any]) -> Iterator[bytes]:
    """The keys a call passed base64-encoded: an error may quote them decoded."""
    if arguments.get("key_encoding") != "base64":
        return
    given = [arguments.get("key"), *(arguments.get("keys") or [])]
    for text in given:
        if isinstance(text, str):
            key = KeyInput(text, "base64").raw
            if key is not None:
                yield key


def _named_keys(answer: Any) -> Iterator[bytes]:
    """Every key an answer names: dicts with `key` (and `key_base64` for binary keys)."""
    if isinstance(answer, dict):
        encoded = answer.get("key_base64")
        if isinstance(encoded, str):
            yield base64.b64decode(encoded)
        elif isinstance(answer.get("key"), str) and "key_base64" in answer:
            yield answer["key"].encode()
        for value in answer.values():
            yield from _named_keys(value)
    elif isinstance(answer, list):
        for item in answer:
            yield from _named_keys(item)


class Monitor:
    """redis-cli MONITOR into a file: every command the server ran while it watched."""

    def __init__(self, server: ServerProcess, path: Path) -> None:
        self.server = server
        self.path = path
        self.out = path.open("wb")
        self.process = subprocess.Popen(
            ["redis-cli", "-p", str(server.port), "monitor"], stdout=self.out
        )
        self._wait_for(b"fuzz-monitor-ready")

    def _wait_for(self, marker: bytes) -> None:
        deadline = time.monotonic() + 15
        with self.server.client() as raw:
            while marker not in self.path.read_bytes():
                assert time.monotonic() < deadline, "MONITOR did not start"
                raw.echo(marker)
                time.sleep(0.05)

    def stop(self) -> bytes:
        self._wait_for(b"fuzz-monitor-end")
        self.process.terminate()
        self.process.wait(timeout=10)
        self.out.close()
        return self.path.read_bytes()


@pytest.fixture
def session(redis_server: ServerProcess, tmp_path: Path) -> Iterator[Session]:
    # One connection: MONITOR names it, and the checks it sends are told apart.
    raw = redis.Redis(host="127.0.0.1", port=redis_server.port, single_connection_client=True)
    raw.flushall()
    seed(raw, INSIDE)
    seed(raw, OUTSIDE)
    target = Target("fuzz", raw, redis_server.url)
    app = app_for(target, prefixes=(), profiles=PROFILES, allow_writes=True)
    assert all(app.scope.contains(key) for key in INSIDE)
    assert not any(app.scope.contains(key) for key in OUTSIDE)
    monitor = Monitor(redis_server, tmp_path / "monitor.log")
    try:
        with ExitStack() as stack:
            portal = stack.enter_context(start_blocking_portal())
            client = portal.call(lambda: Client(build_server(app)))
            stack.enter_context(portal.wrap_async_context_manager(client))
            fuzz = Session(portal, client, app, raw)
            fuzz.outside = fuzz.snapshot_outside()
            yield fuzz
    finally:
        seen = monitor.stop()
    # No command the tools sent named an out-of-scope key or its value. (The marker
    # alone may appear: a caller's identifier "0UT" builds in-scope keys and MATCH
    # patterns under an allowed prefix, which is no escape.)
    mine = f"[0 {raw.client_info()['addr']}]".encode()
    named = [b'"' + monitor_repr(key) + b'"' for key in OUTSIDE] + [monitor_repr(SECRET)]
    leaked = [
        line
        for line in seen.splitlines()
        if mine not in line and any(needle in line for needle in named)
    ]
    ESCAPES["monitor"] += len(leaked)
    assert not leaked, leaked[:5]
    fuzz.verify_no_escape()
    raw.close()


@pytest.fixture(scope="module", autouse=True)
def summary(pytestconfig: pytest.Config) -> Iterator[None]:
    yield
    line = (
        f"fuzz: inputs tried {sum(TRIED.values())} "
        f"({', '.join(f'{tool} {n}' for tool, n in sorted(TRIED.items()))}); "
        f"escapes found {sum(ESCAPES.values())}"
    )
    log.warning(line)
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print("\n" + line)
    else:
        print(line)


# -- strategies --------------------------------------------------------------------------

PREFIX_TEXTS = [p for p in PREFIXES if p.isascii()]
OUTSIDE_TEXT = [k.decode("utf-8", "surrogateescape") for k in OUTSIDE if k.isascii()]
hostile_text = st.text(
    st.one_of(
        st.sampled_from(list("*?[]\\^-:\x00\r\n \t\x7f/{}\"'%$")),
        st.characters(codec="utf-8", exclude_characters=MARK),
    ),
    max_size=40,
).filter(lambda text: MARK not in text)


def _utf8(key: bytes) -> bool:
    try:
        key.decode()
    except UnicodeDecodeError:
        return False
    return True


inside_key_text = st.one_of(
    st.sampled_from([k.decode() for k in INSIDE if _utf8(k)]),
    st.builds(lambda p, rest: p + rest, st.sampled_from(PREFIX_TEXTS), hostile_text),
)
any_key_text = st.one_of(
    inside_key_text,
    st.sampled_from(OUTSIDE_TEXT),
    hostile_text.filter(bool),
    st.builds(lambda p, n: p + "x" * n, st.sampled_from(PREFIX_TEXTS), st.integers(4000, 8300)),
)


@dataclass(frozen=True)
class KeyInput:
    text: str
    encoding: str

    @property
    def raw(self) -> bytes | None:
        if self.encoding == "utf8":
            return self.text.encode()
        try:
            return base64.b64decode(self.text.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


key_inputs = st.one_of(
    st.builds(KeyInput, any_key_text, st.just("utf8")),
    st.builds(
        lambda p, rest: KeyInput(_b64(p + rest), "base64"),
        st.sampled_from([p.encode() for p in PREFIXES]),
        tricky_bytes(0, 12),
    ),
    st.builds(lambda k: KeyInput(_b64(k), "base64"), st.sampled_from(list(INSIDE))),
    st.builds(lambda k: KeyInput(_b64(k), "base64"), st.sampled_from(list(OUTSIDE))),
    st.builds(KeyInput, hostile_text.filter(bool), st.just("base64")),
)

forged_positions = st.builds(
    cursors.Position,
    plan=st.integers(0, 30),
    cursor=st.one_of(
        st.integers(0, 2**70).map(str),
        st.from_regex(r"\A\d{1,20}-\d{1,20}\Z"),
    ),
    count=st.integers(0, 2000),
    skip=st.integers(0, 10**7 - 1),
    fingerprint=st.one_of(st.just("-"), st.from_regex(r"\A[0-9a-f]{12}\Z")),
)


def cursor_inputs(bind: str | None) -> st.SearchStrategy[str | None]:
    """No cursor, random text, a well-formed cursor of another call, and (given the
    binding) a forged one that passes the binding check."""
    options: list[st.SearchStrategy[str | None]] = [
        st.none(),
        hostile_text,
        st.text(min_size=190, max_size=260),
        st.builds(lambda p, b: p.encode(b), forged_positions, st.from_regex(r"\A[0-9a-f]{8}\Z")),
    ]
    if bind is not None:
        options.append(forged_positions.map(lambda p: p.encode(bind)))
    return st.one_of(*options)


counts = st.one_of(st.none(), st.integers(-3, 12), st.integers(9_990, 10_010), st.integers())


def pattern_text(data: bytes) -> str:
    return data.decode("latin-1")


pattern_inputs = st.one_of(
    st.builds(
        lambda p, g: p + pattern_text(g.text),
        st.sampled_from(PREFIX_TEXTS),
        globs(adversarial=True),
    ),
    globs(adversarial=True).map(lambda g: pattern_text(g.text)),
    hostile_text,
    st.sampled_from(["*", "?*", "[a-z]*", "[^x]*", "*0UT*", "other:*", "\\*", "[", "a" * 600]),
).filter(lambda text: MARK not in text or text == "*0UT*")


def _ok_count(value: int | None, most: int = 10_000) -> bool:
    return value is None or 1 <= value <= most


# -- the tools ----------------------------------------------------------------------------


def test_fuzz_get(session: Session) -> None:
    @examples(200)
    @given(key=key_inputs, count=counts, data=st.data())
    def run(key: KeyInput, count: int | None, data: st.DataObject) -> None:
        raw = key.raw
        bind = cursors.binding(b"get", raw) if raw is not None else None
        cursor = data.draw(cursor_inputs(bind))
        arguments: dict[str, Any] = {"key": key.text, "key_encoding": key.encoding}
        if count is not None:
            arguments["count"] = count
        if cursor is not None:
            arguments["cursor"] = cursor
        result = session.call("get", arguments)
        cursor_ok = cursor is None or len(cursor) <= 200
        shape_ok = 0 < len(key.text) <= 8192 and _ok_count(count) and raw and cursor_ok
        if shape_ok and raw is not None and len(raw) <= MAX_KEY_BYTES:
            if session.app.scope.contains(raw):
                assert not result.is_error or cursor is not None, (arguments, result.content)
            else:
                assert result.is_error
                assert "outside the allowed prefixes" in _text(result), arguments

    run()
    session.verify_no_escape()


def test_fuzz_keys(session: Session) -> None:
    @examples(200)
    @given(
        pattern=pattern_inputs,
        kind=st.sampled_from([None, "string", "hash", "list", "set", "zset", "stream", "bogus"]),
        limit=counts,
        data=st.data(),
    )
    def run(pattern: str, kind: str | None, limit: int | None, data: st.DataObject) -> None:
        raw_pattern = pattern.encode()
        bind = cursors.binding(b"keys", raw_pattern, (kind or "").encode())
        cursor = data.draw(cursor_inputs(bind))
        arguments: dict[str, Any] = {"pattern": pattern}
        for name, value in (("type", kind), ("limit", limit), ("cursor", cursor)):
            if value is not None:
                arguments[name] = value
        result = session.call("keys", arguments)
        if result.is_error:
            return
        assert result.structured_content is not None
        parsed = parse_pattern(raw_pattern)
        for entry in result.structured_content["keys"]:
            named = (
                base64.b64decode(entry["key_base64"])
                if entry["key_base64"]
                else entry["key"].encode()
            )
            assert parsed.matches(named), (pattern, named)

    run()
    session.verify_no_escape()


def test_fuzz_set_and_delete(session: Session) -> None:
    @examples(150)
    @given(
        key=key_inputs,
        value=st.one_of(st.text(max_size=50), st.binary(max_size=50).map(_b64)),
        value_encoding=st.sampled_from(["utf8", "base64"]),
        ttl=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        flags=st.fixed_dictionaries(
            {},
            optional={
                "keep_ttl": st.booleans(),
                "only_if_absent": st.booleans(),
                "only_if_exists": st.booleans(),
            },
        ),
        also=st.lists(key_inputs, max_size=4),
    )
    def run(
        key: KeyInput,
        value: str,
        value_encoding: str,
        ttl: float | None,
        flags: dict[str, bool],
        also: list[KeyInput],
    ) -> None:
        arguments: dict[str, Any] = {
            "key": key.text,
            "key_encoding": key.encoding,
            "value": value,
            "value_encoding": value_encoding,
            **flags,
        }
        if ttl is not None:
            arguments["ttl_seconds"] = ttl
        written = session.call("set", arguments)
        if key.raw is not None and key.raw and not session.app.scope.contains(key.raw):
            assert written.is_error
        encoding = key.encoding
        batch = [key, *(k for k in also if k.encoding == encoding)]
        deleted = session.call(
            "delete", {"keys": [k.text for k in batch], "key_encoding": encoding}
        )
        raws = [k.raw for k in batch]
        if any(r is not None and r and not session.app.scope.contains(r) for r in raws):
            assert deleted.is_error
            assert "outside the allowed prefixes" in _text(deleted) or "key" in _text(deleted)

    run()
    session.verify_no_escape()


jwt_segment = st.one_of(
    st.dictionaries(
        st.sampled_from(["jti", "sub", "exp", "iat", "alg", "typ", "x"]),
        st.one_of(
            st.text(max_size=30),
            st.integers(),
            st.floats(allow_nan=False),
            st.booleans(),
            st.none(),
            st.sampled_from([JTI, "*", "../0UT", "x\r\nFLUSHALL", "0UT", "a" * 300]),
        ),
    ).map(lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()),
    st.text(alphabet="ABCabc012-_=+/.", max_size=20),
    st.binary(max_size=20).map(lambda b: base64.urlsafe_b64encode(b).decode()),
)
tokens = st.one_of(
    st.lists(jwt_segment, min_size=1, max_size=6).map(".".join),
    st.builds(lambda t: "Bearer " + t, st.lists(jwt_segment, min_size=3, max_size=3).map(".".join)),
    hostile_text.filter(bool),
    st.integers(16_000, 17_000).map(lambda n: "a." * (n // 2) + "b"),
)


def test_fuzz_check_blacklist(session: Session) -> None:
    @examples(200)
    @given(
        token=st.one_of(st.none(), tokens),
        jti=st.one_of(
            st.none(),
            st.just(JTI),
            st.uuids().map(str),
            hostile_text,
            st.sampled_from(["*", "[a-z]*", "0UT", "../0UT"]),
            st.text(min_size=250, max_size=300),
        ),
    )
    def run(token: str | None, jti: str | None) -> None:
        arguments = {name: v for name, v in (("token", token), ("jti", jti)) if v is not None}
        result = session.call("check_blacklist", arguments)
        if token is not None and len(token) > 24:
            # The token is never shown whole, in an answer or in an error.
            everything = " ".join(getattr(b, "text", "") for b in result.content)
            assert token.strip() not in everything + json.dumps(result.structured_content)
        if token is None and jti is None:
            assert result.is_error

    run()
    session.verify_no_escape()


def test_fuzz_rate_limits_and_sessions(session: Session) -> None:
    identifiers = st.one_of(
        st.none(),
        hostile_text,
        st.sampled_from(["0123456789abcdef", "42", "1.2.3.4", "*", "auth_login", "0UT"]),
    )

    @examples(150)
    @given(
        identifier=identifiers,
        user_agent=st.one_of(st.none(), hostile_text, st.text(min_size=2040, max_size=2060)),
        endpoint=st.one_of(st.none(), hostile_text, st.sampled_from(["auth_login", "/api/*"])),
        key=st.one_of(st.none(), key_inputs),
        reveal=st.booleans(),
        limit=counts,
        cursor=cursor_inputs(None),
        user=st.one_of(st.none(), hostile_text, st.sampled_from(["42", "user-1", "*"])),
        session_limit=st.one_of(st.none(), st.integers(-2, 5), st.integers(995, 1005)),
    )
    def run(
        identifier: str | None,
        user_agent: str | None,
        endpoint: str | None,
        key: KeyInput | None,
        reveal: bool,
        limit: int | None,
        cursor: str | None,
        user: str | None,
        session_limit: int | None,
    ) -> None:
        arguments: dict[str, Any] = {"reveal_personal": reveal}
        for name, value in (
            ("identifier", identifier),
            ("user_agent", user_agent),
            ("endpoint", endpoint),
            ("limit", limit),
            ("cursor", cursor),
        ):
            if value is not None:
                arguments[name] = value
        if key is not None:
            arguments |= {"key": key.text, "key_encoding": key.encoding}
        session.call("inspect_rate_limits", arguments)
        sessions: dict[str, Any] = {
            name: value
            for name, value in (("user", user), ("limit", session_limit), ("cursor", cursor))
            if value is not None
        }
        session.call("list_sessions", sessions)

    run()
    session.verify_no_escape()


def test_fuzz_keyspace_diagnostics_and_cache(session: Session) -> None:
    @examples(60)
    @given(
        budget=st.one_of(
            st.none(), st.integers(98, 101), st.integers(MAX_BUDGET - 1, MAX_BUDGET + 1)
        ),
        cursor=cursor_inputs(cursors.binding(b"keyspace_summary")),
        count=st.one_of(st.integers(-1, 2), st.integers(127, 129)),
    )
    def run(budget: int | None, cursor: str | None, count: int) -> None:
        arguments = {n: v for n, v in (("budget", budget), ("cursor", cursor)) if v is not None}
        result = session.call("keyspace_summary", arguments)
        if budget is not None and not 100 <= budget <= MAX_BUDGET:
            assert result.is_error
        slow = session.call("slowlog", {"count": count})
        assert slow.is_error == (not 1 <= count <= 128)

    run()

    @examples(12)
    @given(
        window=st.one_of(
            st.sampled_from([0, -1, 0.999, 60.001, 1e308, "ten"]),
            st.just(1),
        ),
        namespaces=st.one_of(
            st.none(),
            st.lists(
                st.one_of(hostile_text, st.sampled_from(["cache", "mita.cache", "0UT"])),
                max_size=3,
            ),
            st.lists(st.just("cache"), min_size=51, max_size=52),
        ),
    )
    def cache(window: object, namespaces: list[str] | None) -> None:
        arguments: dict[str, Any] = {"window_seconds": window}
        if namespaces is not None:
            arguments["namespaces"] = namespaces
        result = session.call("cache_hit_rate", arguments)
        if window != 1:
            assert result.is_error

    cache()
    for tool, arguments in (
        ("latency", {}),
        ("clients", {}),
        ("info", {}),
        ("info", {"section": "keyspace"}),
        ("info", {"section": "bad section"}),
        ("info", {"section": "x" * 40}),
        ("latency", {"unexpected": 1}),
        ("slowlog", {"count": "ten"}),
        ("get", {}),
        ("get", {"key": 42}),
        ("delete", {"keys": []}),
        ("delete", {"keys": ["cache:x"] * 101}),
        ("no_such_tool", {}),
    ):
        session.call(tool, arguments)
    session.verify_no_escape()


def _text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


# -- delete_pattern's token flow, and undo -------------------------------------------------

DELETE_PATTERNS = [
    *["cache:*", "cache:?reeting", "cache:[gh]*", "rate_limit:*", "meta:*", "tag:*", "mita:*"],
    *["*", "*:*", "?*", "[a-z]*", "LIMITS:*", "penalties:*", "cach*", "rate_limit*", "c*"],
    # Attempts to reach outside: other prefixes, the marker, escapes, near-prefixes.
    *["other:*", "*0UT*", "app:*", "\\*", "[", "*\\", "cache:\\*", "Rate_limit:*", " cache:*"],
    *["[^r]*", "[\\x00-\\xff]*", "rate_limit?*", "mita:blacklist:*0UT", "LIMITS:LIMITER*"],
]
# Mostly patterns that match keys in scope, so that tokens are issued.
delete_patterns = st.one_of(
    st.sampled_from(DELETE_PATTERNS[:16]),
    st.sampled_from(DELETE_PATTERNS[:16]),
    st.sampled_from(DELETE_PATTERNS),
    pattern_inputs,
)
TOKEN_KINDS = ["own", "replayed", "mutated", "other pattern", "forged", "text", "none"]
forged_tokens = st.builds(
    lambda expiry, count, mac: f"{expiry}.{count}.{mac}",
    st.one_of(st.integers(0, 10**12 - 1), st.just(int(NOW) + 300)),
    st.integers(0, 999_999),
    st.from_regex(r"\A[0-9a-f]{32}\Z"),
)
# Mostly valid, so that the keys come back for the next examples to delete.
undo_counts = st.one_of(
    st.just(1), st.integers(1, 3), st.none(), st.sampled_from([0, -1, 100, 101, "ten", 1.5])
)


def _crashed(tool: str, result: CallToolResult) -> bool:
    """The SDK's answer to an exception the tool did not turn into a clear error."""
    return result.is_error and _text(result).strip() == f"Error executing tool {tool}"


def _mutate(token: str, at: int, char: str) -> str:
    at %= len(token)
    if token[at] == char:
        char = "1" if char != "1" else "2"
    return token[:at] + char + token[at + 1 :]


def test_fuzz_delete_pattern_and_undo(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dry run, then a confirm token that is the dry run's own, replayed, another
    pattern's, mutated, forged or noise; then undo. Only the own token deletes, exactly
    what its dry run matched, all in scope; undo puts it back."""
    monkeypatch.setattr(session.app.journal, "path", tmp_path / "journal.jsonl")
    raw = session.raw

    @examples(200)
    @given(
        pattern=delete_patterns,
        max_keys=st.one_of(st.none(), st.integers(-1, 4), st.integers(9_999, 10_001)),
        kind=st.sampled_from(TOKEN_KINDS),
        other=delete_patterns,
        undo_count=undo_counts,
        data=st.data(),
    )
    def run(
        pattern: str,
        max_keys: int | None,
        kind: str,
        other: str,
        undo_count: object,
        data: st.DataObject,
    ) -> None:
        arguments: dict[str, Any] = {"pattern": pattern}
        if max_keys is not None:
            arguments["max_keys"] = max_keys
        before = raw.dbsize()
        dry = session.call("delete_pattern", arguments)
        assert not _crashed("delete_pattern", dry), arguments
        assert raw.dbsize() == before, "a dry run deleted"
        if not _ok_count(max_keys):
            assert dry.is_error
        token = None if dry.is_error else (dry.structured_content or {})["confirm_token"]
        confirm: str | None = None
        if kind in ("own", "replayed"):
            confirm = token
        elif kind == "other pattern":
            foreign = session.call("delete_pattern", {**arguments, "pattern": other})
            if not foreign.is_error:
                confirm = (foreign.structured_content or {})["confirm_token"]
        elif kind == "mutated" and token is not None:
            at = data.draw(st.integers(0, 200))
            confirm = _mutate(token, at, data.draw(st.sampled_from("0123456789abcdef.")))
        elif kind == "forged":
            confirm = data.draw(forged_tokens)
        elif kind == "text":
            confirm = data.draw(st.one_of(hostile_text, st.text(min_size=95, max_size=110)))
        expect_delete = confirm == token and token is not None
        if confirm is not None:
            confirmed = session.call("delete_pattern", {**arguments, "confirm_token": confirm})
            assert not _crashed("delete_pattern", confirmed), arguments
            answer = confirmed.structured_content or {}
            if expect_delete:
                assert not confirmed.is_error, _text(confirmed)
                assert answer["deleted"] == answer["matched"] > 0
                assert raw.dbsize() == before - answer["deleted"]
            else:
                assert confirmed.is_error or answer["deleted"] == 0, (arguments, confirm)
                assert raw.dbsize() == before, "a token that was not the dry run's deleted"
            if kind == "replayed":
                replay = session.call("delete_pattern", {**arguments, "confirm_token": confirm})
                assert replay.is_error or (replay.structured_content or {})["deleted"] == 0
            session.verify_no_escape()

        undo_arguments = {} if undo_count is None else {"count": undo_count}
        undone = session.call("undo", undo_arguments)
        assert not _crashed("undo", undone), undo_arguments
        valid = undo_count is None or (type(undo_count) is int and 1 <= undo_count <= 100)
        assert undone.is_error == (not valid), (undo_arguments, _text(undone))
        if valid:
            assert (undone.structured_content or {})["refused"] is None, _text(undone)
        if valid and expect_delete:
            # count > 1 may also restore deletions an earlier invalid count left.
            assert raw.dbsize() >= before, "undo did not put the deleted keys back"
        session.verify_no_escape()

    run()
    # Whatever is left pending goes back too: every in-scope key as seeded.
    final = session.call("undo", {"count": 100})
    assert (final.structured_content or {})["refused"] is None, _text(final)
    for key in INSIDE:
        assert raw.exists(key), key
    session.verify_no_escape()


def _journal_line(kind: str, change: str, **fields: object) -> bytes:
    return json.dumps({"kind": kind, "change": change, **fields}).encode() + b"\n"


@st.composite
def tampered_journals(draw: st.DrawFn, dumps: dict[bytes, bytes]) -> bytes:
    """A journal file as an editor, a crash or another configuration may leave it:
    well-formed changes naming keys in and out of scope, with real, random or broken
    DUMPs, odd TTLs and times, and lines of noise."""
    lines: list[bytes] = []
    for _ in range(draw(st.integers(1, 5))):
        change = draw(st.sampled_from(["a", "b", "c"]))
        choice = draw(st.integers(0, 5))
        if choice == 0:
            lines.append(draw(st.binary(max_size=60)) + b"\n")
            continue
        if choice == 1:
            lines.append(_journal_line(draw(st.sampled_from(["done", "undone"])), change))
            continue
        key = draw(
            st.one_of(
                st.sampled_from(list(INSIDE)),
                st.sampled_from(list(OUTSIDE)),
                st.builds(
                    lambda p, rest: p + rest,
                    st.sampled_from([p.encode() for p in PREFIXES]),
                    tricky_bytes(0, 8),
                ),
            )
        )
        dump = draw(
            st.one_of(
                st.none(),
                st.sampled_from(list(dumps.values())).map(_b64),
                st.binary(max_size=40).map(_b64),
                hostile_text,
            )
        )
        encoded: object = draw(st.one_of(st.just(_b64(key)), hostile_text, st.integers()))
        lines.append(
            _journal_line(
                "before",
                change,
                time=draw(
                    st.one_of(
                        st.just(NOW),
                        st.floats(),
                        st.integers(-(2**70), 2**70),
                        st.text(max_size=5),
                    )
                ),
                tool=draw(st.sampled_from(["delete", "set", "delete_pattern", "flushall\r\n"])),
                key=encoded,
                type=draw(st.sampled_from(["string", "hash", "none", "bogus"])),
                pttl=draw(st.one_of(st.integers(-2, 10**6), st.integers(), st.floats())),
                dump=dump,
            )
        )
        if draw(st.booleans()):
            after = draw(
                st.one_of(
                    st.none(),
                    st.just({_b64(key): "absent"}),
                    st.dictionaries(hostile_text, hostile_text, max_size=2),
                    st.integers(),
                )
            )
            lines.append(_journal_line("done", change, after=after))
    return b"".join(lines)


def test_fuzz_undo_over_a_tampered_journal(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """undo reads its journal from disk: whatever the file holds, it never touches an
    out-of-scope key and answers with a result or a clear error."""
    path = tmp_path / "journal.jsonl"
    monkeypatch.setattr(session.app.journal, "path", path)
    dumps = {key: session.raw.dump(key) for key in INSIDE}

    @examples(100)
    @given(journal=tampered_journals({k: v for k, v in dumps.items() if v is not None}))
    def run(journal: bytes) -> None:
        path.write_bytes(journal)
        path.chmod(0o600)
        result = session.call("undo", {"count": 100})
        assert not _crashed("undo", result), journal
        session.verify_no_escape()

    run()
    session.verify_no_escape()


# -- profiles ----------------------------------------------------------------------------

toml_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.sampled_from(["{uid}", "{a}{b}", "*", "", "rate_limit:{x}", "[", "{", "}", "0UT:{k}"]),
)
NAMESPACE_KEYS = ["kind", "pattern", "type", "ttl", "owner", "fields", "rate_limit", "x"]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


@st.composite
def profile_texts(draw: st.DrawFn) -> str:
    """A profile file: sometimes valid-looking, sometimes mangled or plain noise."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.text(max_size=200))
    builtin = (
        Path(__file__).parents[1] / "src/mita_redis_mcp/schema/profiles/mita.toml"
    ).read_text()
    if choice == 1:
        at = draw(st.integers(0, len(builtin)))
        cut = draw(st.integers(0, 200))
        return builtin[:at] + draw(st.text(max_size=20)) + builtin[at + cut :]
    lines = ["[profiles.fuzz]"]
    if draw(st.booleans()):
        lines.append(f"description = {_toml_value(draw(st.text(max_size=20)))}")
    for index in range(draw(st.integers(0, 3))):
        lines.append(f"[profiles.fuzz.namespaces.ns{index}]")
        for name in draw(st.lists(st.sampled_from(NAMESPACE_KEYS), unique=True)):
            lines.append(f"{name} = {_toml_value(draw(toml_scalars))}")
    return "\n".join(lines)


@settings(max_examples=400, deadline=None)
@given(text=profile_texts())
def test_fuzz_profile_texts(text: str) -> None:
    TRIED["parse_profiles"] += 1
    profiles, declared, problems = parse_profiles(text, "fuzz.toml")
    assert all(isinstance(p, str) and p.startswith("fuzz.toml") for p in problems)
    assert set(profiles) <= set(declared)
    if not problems:
        # A profile that parses never widens the scope to every key.
        prefixes = scope_prefixes(list(profiles.values()))
        if "" in prefixes:
            ESCAPES["parse_profiles"] += 1
        assert "" not in prefixes, text


def monitor_repr(data: bytes) -> bytes:
    """An argument as MONITOR prints it (Redis's sdscatrepr, without the quotes)."""
    escapes = {
        0x5C: b"\\\\",
        0x22: b'\\"',
        0x0A: b"\\n",
        0x0D: b"\\r",
        0x09: b"\\t",
        0x07: b"\\a",
        0x08: b"\\b",
    }
    out = bytearray()
    for byte in data:
        if byte in escapes:
            out += escapes[byte]
        elif 0x20 <= byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\x%02x" % byte
    return bytes(out)
