"""check_blacklist against a real redis-server holding MITA's blacklist as MITA writes it.

MITA (app/services/token_blacklist_service.py) SETs mita:blacklist:token:{jti} to
'blacklisted', 'user_revocation' or 'admin_revocation:{admin}' with EX = the token's
remaining life (at most 7 days), SADDs the jti to mita:user:tokens:{uid} with EXPIRE,
and HINCRBYs mita:blacklist:metrics; the legacy app/core/upstash.py SETs
revoked:jwt:{jti} to 'blacklisted' with EX. Tokens are built here: header.payload.
signature in base64url, the signature garbage (the tool never verifies it).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from mcp import Client

from mita_redis_mcp.app import App
from mita_redis_mcp.redact import fingerprint, redact_credential
from mita_redis_mcp.server import build_server
from tests.conftest import Target, app_for, call_tool, error_text, installed
from tests.servers import ServerProcess, free_port, redis_binary, running

pytestmark = pytest.mark.anyio

Answer = dict[str, Any]
MakeApp = Callable[..., App]
MITA = {"profiles": ("mita",), "prefixes": ()}
WEEK = 7 * 86400


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    head = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    return ".".join(
        [
            b64url(json.dumps(head).encode()),
            b64url(json.dumps(claims).encode()),
            b64url(b"not-a-real-signature-at-all"),
        ]
    )


def mita_token(uid: str = "42", lifetime: float = 7200, **extra: Any) -> tuple[str, str, float]:
    """A MITA access token: (token, jti, exp)."""
    jti = str(uuid.uuid4())
    exp = time.time() + lifetime
    claims = {"sub": uid, "jti": jti, "exp": int(exp), "iat": int(time.time()), **extra}
    return make_jwt(claims), jti, int(exp)


def mita_revoke(raw: redis.Redis, jti: str, uid: str, exp: float, reason: str) -> int:
    """What TokenBlacklistService.blacklist_token writes; returns the TTL used."""
    ttl = min(int(exp - time.time()), WEEK)
    raw.execute_command("SETEX", f"mita:blacklist:token:{jti}", ttl, reason)  # type: ignore[no-untyped-call]
    raw.sadd(f"mita:user:tokens:{uid}", jti)
    raw.expire(f"mita:user:tokens:{uid}", WEEK)
    raw.hincrby("mita:blacklist:metrics", "total_blacklisted", 1)
    raw.hincrby("mita:blacklist:metrics", "access_tokens_blacklisted", 1)
    return ttl


def legacy_revoke(raw: redis.Redis, jti: str, ttl: int) -> None:
    """What app/core/upstash.py's blacklist_token writes."""
    raw.set(f"revoked:jwt:{jti}", "blacklisted", ex=ttl)


@pytest.fixture
async def make(real_target: Target) -> AsyncIterator[MakeApp]:
    made: list[App] = []

    def build(target: Target = real_target, **options: Any) -> App:
        app = app_for(target, **{**MITA, **options})
        made.append(app)
        return app

    yield build
    for app in made:
        await app.backend.close()


async def check(app: App, **arguments: Any) -> Answer:
    result = await call_tool(app, "check_blacklist", arguments)
    assert not result.is_error, error_text(result)
    content: Answer | None = result.structured_content
    assert content is not None
    return content


async def refused(app: App, **arguments: Any) -> str:
    return error_text(await call_tool(app, "check_blacklist", arguments))


def by_prefix(answer: Answer) -> dict[str, Answer]:
    return {entry["prefix"]: entry for entry in answer["entries"]}


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- the answer against what MITA wrote ------------------------------------------------


async def test_token_revoked_by_user_under_the_current_prefix(
    make: MakeApp, real_target: Target
) -> None:
    token, jti, exp = mita_token(uid="42")
    ttl = mita_revoke(real_target.raw, jti, "42", exp, "user_revocation")
    answer = await check(make(), token=token)

    assert answer["jti"] == jti
    assert answer["blacklisted"] is True
    entries = by_prefix(answer)
    assert set(entries) == {"mita:blacklist:token:", "revoked:jwt:"}
    current = entries["mita:blacklist:token:"]
    assert current["blacklisted"] is True
    assert current["key"] == f"mita:blacklist:token:{jti}"
    assert current["reason"] == "user_revocation"
    assert ttl - 2 <= current["ttl_seconds"] <= ttl
    assert abs(iso_seconds(current["until"]) - (time.time() + ttl)) <= 3
    assert entries["revoked:jwt:"]["blacklisted"] is False
    assert entries["revoked:jwt:"]["reason"] is None
    # The subject's set of revoked jtis holds it too.
    assert answer["revoked_sets"] == [
        {
            "profile": "mita",
            "namespace": "user_revoked_tokens",
            "key": "mita:user:tokens:42",
            "listed": True,
        }
    ]
    claims = answer["token"]
    assert claims["subject"] == "42"
    assert claims["algorithm"] == "HS256"
    assert claims["expired"] is False
    assert iso_seconds(claims["expires_at"]) == exp
    assert "mita:blacklist:token:" in answer["summary"]
    # The stored reason is data: in entries[].reason, never in the summary's sentence.
    assert "user_revocation" not in answer["summary"]
    # 2 prefixes x (PTTL, STRLEN, GETRANGE) + SISMEMBER + CONFIG GET.
    assert answer["commands"] == 8


async def test_raw_token_never_appears_in_the_answer(make: MakeApp, real_target: Target) -> None:
    token, jti, exp = mita_token()
    mita_revoke(real_target.raw, jti, "42", exp, "blacklisted")
    answer = await check(make(), token="Bearer " + token)
    text = json.dumps(answer)
    assert token not in text
    for part in token.split("."):
        assert part not in text
    assert answer["token"]["token"] == redact_credential(token)
    assert answer["token"]["fingerprint"] == fingerprint(token)


async def test_legacy_prefix_only(make: MakeApp, real_target: Target) -> None:
    _token, jti, _exp = mita_token()
    legacy_revoke(real_target.raw, jti, 3600)
    answer = await check(make(), jti=jti)
    entries = by_prefix(answer)
    assert answer["blacklisted"] is True
    assert entries["mita:blacklist:token:"]["blacklisted"] is False
    assert entries["revoked:jwt:"]["blacklisted"] is True
    assert entries["revoked:jwt:"]["reason"] == "blacklisted"
    assert 3598 <= entries["revoked:jwt:"]["ttl_seconds"] <= 3600
    assert answer["token"] is None
    assert answer["revoked_sets"] == []
    assert "revoked:jwt:" in answer["summary"]
    assert answer["commands"] == 7


async def test_both_prefixes(make: MakeApp, real_target: Target) -> None:
    token, jti, exp = mita_token(uid="7")
    mita_revoke(real_target.raw, jti, "7", exp, "blacklisted")
    legacy_revoke(real_target.raw, jti, 600)
    answer = await check(make(), token=token)
    assert all(entry["blacklisted"] for entry in answer["entries"])
    assert " and " in answer["summary"]


async def test_admin_revocation_masks_the_admins_email(make: MakeApp, real_target: Target) -> None:
    token, jti, exp = mita_token()
    mita_revoke(real_target.raw, jti, "42", exp, "admin_revocation:support.lead@mita.finance")
    answer = await check(make(), token=token)
    reason = by_prefix(answer)["mita:blacklist:token:"]["reason"]
    assert reason == "admin_revocation:s***@mita.finance"
    assert "support.lead" not in json.dumps(answer)


async def test_admin_revocation_by_id_is_shown(make: MakeApp, real_target: Target) -> None:
    token, jti, exp = mita_token()
    mita_revoke(real_target.raw, jti, "42", exp, "admin_revocation:admin-17")
    answer = await check(make(), token=token)
    assert by_prefix(answer)["mita:blacklist:token:"]["reason"] == "admin_revocation:admin-17"


async def test_revoked_but_entry_gone_is_warned(make: MakeApp, real_target: Target) -> None:
    # As after an eviction: the per-user set still lists the jti, the entry is gone.
    token, jti, exp = mita_token(uid="42")
    mita_revoke(real_target.raw, jti, "42", exp, "user_revocation")
    real_target.raw.delete(f"mita:blacklist:token:{jti}")
    answer = await check(make(), token=token)
    assert answer["blacklisted"] is False
    assert answer["revoked_sets"][0]["listed"] is True
    assert any("expired or was evicted" in w for w in answer["warnings"])


async def test_blacklist_key_of_another_type(make: MakeApp, real_target: Target) -> None:
    _token, jti, _exp = mita_token()
    real_target.raw.sadd(f"mita:blacklist:token:{jti}", "oops")
    answer = await check(make(), jti=jti)
    entry = by_prefix(answer)["mita:blacklist:token:"]
    assert entry["blacklisted"] is True
    assert "not a string" in entry["note"]


async def test_not_blacklisted(make: MakeApp, real_target: Target) -> None:
    token, _jti, _exp = mita_token(uid="42")
    answer = await check(make(), token=token)
    assert answer["blacklisted"] is False
    assert not any(entry["blacklisted"] for entry in answer["entries"])
    assert answer["revoked_sets"][0]["listed"] is False
    assert "not blacklisted" in answer["summary"]


async def test_expired_token_is_said_to_be_expired(make: MakeApp, real_target: Target) -> None:
    token, _jti, exp = mita_token(lifetime=-60)
    answer = await check(make(), token=token)
    assert answer["token"]["expired"] is True
    assert iso_seconds(answer["token"]["expires_at"]) == exp
    assert "expired" in answer["summary"]


async def test_token_without_exp(make: MakeApp) -> None:
    token = make_jwt({"jti": str(uuid.uuid4())})
    answer = await check(make(), token=token)
    assert answer["token"]["expires_at"] is None
    assert answer["token"]["expired"] is None
    assert answer["token"]["subject"] is None
    assert answer["revoked_sets"] == []


async def test_entry_that_outlives_its_ttl_cap_is_warned(
    make: MakeApp, real_target: Target
) -> None:
    # A refresh token of 8 days: MITA caps the entry at 7, so the last day it is valid again.
    token, jti, exp = mita_token(lifetime=8 * 86400)
    mita_revoke(real_target.raw, jti, "42", exp, "user_revocation")
    answer = await check(make(), token=token)
    assert any("accepted again" in w for w in answer["warnings"])


async def test_entry_without_ttl_is_a_leak(make: MakeApp, real_target: Target) -> None:
    _token, jti, _exp = mita_token()
    real_target.raw.set(f"mita:blacklist:token:{jti}", "blacklisted")
    answer = await check(make(), jti=jti)
    entry = by_prefix(answer)["mita:blacklist:token:"]
    assert entry["ttl_seconds"] is None
    assert entry["until"] is None
    assert "never expires" in entry["note"]
    assert any("leak" in w for w in answer["warnings"])


async def test_huge_reason_is_read_bounded(make: MakeApp, real_target: Target) -> None:
    _token, jti, _exp = mita_token()
    real_target.raw.set(f"mita:blacklist:token:{jti}", "x" * 1_000_000, ex=60)
    answer = await check(make(), jti=jti)
    reason = by_prefix(answer)["mita:blacklist:token:"]["reason"]
    assert reason == "x" * 256 + "…"


# -- malformed input: refused before any command --------------------------------------


@pytest.fixture
def dead_target() -> Iterator[Target]:
    """A URL where nothing listens: a tool that sent a command would fail to connect."""
    port = free_port()
    raw = redis.Redis(host="127.0.0.1", port=port)
    yield Target("dead", raw, f"redis://127.0.0.1:{port}/0")
    raw.close()


def _segment(value: Any) -> str:
    return b64url(json.dumps(value).encode())


MALFORMED = {
    "one part": "notajwt",
    "two parts": "aGVsbG8.d29ybGQ",
    "four parts": "a.b.c.d",
    "JWE": "a.b.c.d.e",
    "payload not base64url": "eyJhbGciOiJIUzI1NiJ9.ab$cd.sig",
    "payload bad length": "eyJhbGciOiJIUzI1NiJ9.abcde.sig",
    "payload not JSON": "eyJhbGciOiJIUzI1NiJ9." + b64url(b"hello world") + ".sig",
    "payload a JSON list": "eyJhbGciOiJIUzI1NiJ9." + _segment([1, 2]) + ".sig",
    "header not JSON": b64url(b"\xff\xfe") + "." + _segment({"jti": "x"}) + ".sig",
    "no jti": make_jwt({"sub": "42", "exp": 1}),
    "jti not a string": make_jwt({"jti": 12345}),
    "empty payload": "eyJhbGciOiJIUzI1NiJ9..sig",
}


async def refusals(app: App, cases: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The error of each call, through one client (one server build for all cases)."""
    messages: dict[str, str] = {}
    async with Client(build_server(app)) as client:
        for name, arguments in cases.items():
            messages[name] = error_text(await client.call_tool("check_blacklist", arguments))
    return messages


async def test_malformed_token_is_refused_clearly(make: MakeApp, dead_target: Target) -> None:
    cases = {name: {"token": token} for name, token in MALFORMED.items()}
    for name, message in (await refusals(make(dead_target), cases)).items():
        assert "JWT" in message or "jti" in message, name
        assert "cannot reach" not in message, name
        token = MALFORMED[name]
        assert len(token) <= 8 or token not in message, name


async def test_overlong_token_is_not_echoed(make: MakeApp, dead_target: Target) -> None:
    token = make_jwt({"jti": str(uuid.uuid4()), "pad": "p" * 20_000})
    message = await refused(make(dead_target), token=token)
    assert "at most 16384" in message
    assert token[:20] not in message
    assert token[-20:] not in message


BAD_JTIS = {
    "not a uuid": "not-a-uuid",
    "upper-case uuid": str(uuid.uuid4()).upper(),
    "glob": "*",
    "key injection": f"{uuid.uuid4()}:extra",
    "path": "../../etc",
    "in a token": make_jwt({"jti": "abc", "exp": 1}),
}


async def test_jti_that_is_not_a_uuid_is_refused_before_any_command(
    make: MakeApp, dead_target: Target
) -> None:
    cases = {
        name: {"token": value} if name == "in a token" else {"jti": value}
        for name, value in BAD_JTIS.items()
    }
    for name, message in (await refusals(make(dead_target), cases)).items():
        assert "nothing was sent to Redis" in message, name
        assert "cannot reach" not in message, name


async def test_token_and_jti_together_or_neither(make: MakeApp, dead_target: Target) -> None:
    token, jti, _exp = mita_token()
    assert "not both" in await refused(make(dead_target), token=token, jti=jti)
    assert "pass either token" in await refused(make(dead_target))


async def test_profile_without_blacklist(make: MakeApp, dead_target: Target) -> None:
    app = make(dead_target, profiles=("fastapi-users",))
    message = await refused(app, jti=str(uuid.uuid4()))
    assert "no active profile describes a token blacklist" in message


async def test_blacklist_outside_scope(make: MakeApp, dead_target: Target) -> None:
    app = make(dead_target, prefixes=("rate_limit:",))
    message = await refused(app, jti=str(uuid.uuid4()))
    assert "outside the allowed prefixes" in message


# -- eviction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "evicts"),
    [("allkeys-lru", True), ("volatile-ttl", True), ("noeviction", False)],
)
async def test_eviction_policy(make: MakeApp, policy: str, evicts: bool) -> None:
    binary = installed(redis_binary())
    with running(binary, "--maxmemory-policy", policy) as server:
        target = Target("redis", server.client(), server.url)
        _token, jti, _exp = mita_token()
        legacy_revoke(target.raw, jti, 60)
        answer = await check(make(target), jti=jti)
        target.raw.close()
    assert answer["eviction"]["policy"] == policy
    assert answer["eviction"]["can_evict"] is evicts
    warned = any("evict" in w and policy in w for w in answer["warnings"])
    assert warned is evicts
    assert (f"maxmemory-policy {policy} can evict" in answer["summary"]) is evicts


async def test_config_refused_degrades_with_a_note(
    make: MakeApp, real_target: Target, redis_server: ServerProcess
) -> None:
    real_target.raw.acl_setuser(
        "blacklist-reader",
        enabled=True,
        passwords=["+reader-pw"],
        keys=["*"],
        commands=["+@all", "-config"],
    )
    try:
        url = f"redis://blacklist-reader:reader-pw@127.0.0.1:{redis_server.port}/0"
        target = Target("redis-acl", real_target.raw, url)
        token, jti, exp = mita_token()
        mita_revoke(real_target.raw, jti, "42", exp, "user_revocation")
        answer = await check(make(target), token=token)
    finally:
        real_target.raw.acl_deluser("blacklist-reader")
    assert answer["blacklisted"] is True
    assert answer["eviction"]["policy"] is None
    assert answer["eviction"]["can_evict"] is None
    assert "could not be checked" in answer["eviction"]["note"]
    assert "could not be checked" in answer["summary"]
    assert answer["warnings"] == []


async def test_iat_and_extra_claims(make: MakeApp) -> None:
    now = int(time.time())
    token = make_jwt({"jti": str(uuid.uuid4()), "iat": now, "exp": now + 60, "sub": 42})
    answer = await check(make(), token=token)
    assert iso_seconds(answer["token"]["issued_at"]) == now
    assert answer["token"]["subject"] == "42"
    assert datetime.fromisoformat(answer["token"]["expires_at"]).tzinfo == UTC
