"""list_sessions against a real redis-server, the sessions written by the libraries
themselves: fastapi-users' RedisStrategy, Flask-Session, starsessions' RedisStore and
Django's cache sessions through django-redis; and MITA, which keeps none.

Every answer is checked against what the library wrote, and the raw session id or
bearer token must appear nowhere in the JSON answer.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from fastapi_users.authentication.strategy.redis import RedisStrategy
from flask import Flask, session
from flask_session import Session as FlaskSession  # type: ignore[import-untyped]
from mcp import Client
from starsessions.serializers import JsonSerializer
from starsessions.session import generate_session_id
from starsessions.stores.redis import RedisStore

from mita_redis_mcp.app import App
from mita_redis_mcp.redact import fingerprint, redact_credential
from mita_redis_mcp.server import build_server
from mita_redis_mcp.tools import sessions as sessions_module
from tests.conftest import Target, app_for, call_tool, error_text

pytestmark = pytest.mark.anyio

Answer = dict[str, Any]
MakeApp = Callable[..., App]


@pytest.fixture
async def make(real_target: Target) -> AsyncIterator[MakeApp]:
    made: list[App] = []

    def build(*profiles: str, **options: Any) -> App:
        app = app_for(real_target, profiles=profiles, prefixes=(), **options)
        made.append(app)
        return app

    yield build
    for app in made:
        await app.backend.close()


async def list_sessions(app: App, **arguments: Any) -> Answer:
    result = await call_tool(app, "list_sessions", arguments)
    assert not result.is_error, error_text(result)
    content: Answer | None = result.structured_content
    assert content is not None
    return content


def assert_hidden(answer: Answer, secrets: list[str]) -> None:
    text = json.dumps(answer)
    for secret in secrets:
        assert secret not in text


def assert_expires(entry: Answer, ttl: float) -> None:
    assert ttl - 3 <= entry["ttl_seconds"] <= ttl
    expires = datetime.fromisoformat(entry["expires_at"]).timestamp()
    assert abs(expires - (time.time() + entry["ttl_seconds"])) <= 2


# -- fastapi-users --------------------------------------------------------------------


@dataclass
class User:
    """What fastapi-users' UserProtocol asks of a user model."""

    id: uuid.UUID = field(default_factory=uuid.uuid4)
    email: str = "someone@example.com"
    hashed_password: str = "x"
    is_active: bool = True
    is_superuser: bool = False
    is_verified: bool = True


async def write_tokens(url: str, user: User, count: int, lifetime: int | None) -> list[str]:
    """Log ``user`` in ``count`` times with the strategy fastapi-users uses for Redis."""
    client = aioredis.Redis.from_url(url)
    try:
        strategy: RedisStrategy[User, uuid.UUID] = RedisStrategy(client, lifetime_seconds=lifetime)
        return [await strategy.write_token(user) for _ in range(count)]
    finally:
        await client.aclose()


async def test_fastapi_users_tokens(make: MakeApp, real_target: Target) -> None:
    alice, bob = User(), User()
    alice_tokens = await write_tokens(real_target.url, alice, 3, 3600)
    bob_tokens = await write_tokens(real_target.url, bob, 1, None)
    answer = await list_sessions(make("fastapi-users"))

    assert answer["complete"] is True
    assert answer["no_session_store"] == []
    assert len(answer["sessions"]) == 4
    by_fingerprint = {s["fingerprint"]: s for s in answer["sessions"]}
    for token in alice_tokens:
        entry = by_fingerprint[fingerprint(token)]
        assert entry["owner"] == str(alice.id)
        assert entry["session_id"] == redact_credential(token)
        assert entry["key"] == f"fastapi_users_token:{redact_credential(token)}"
        assert entry["format"] == "text"
        assert entry["size"] == len(str(alice.id))
        assert entry["profile"] == "fastapi-users"
        assert_expires(entry, 3600)
    bobs = by_fingerprint[fingerprint(bob_tokens[0])]
    assert bobs["owner"] == str(bob.id)
    assert bobs["ttl_seconds"] is None
    assert bobs["expires_at"] is None
    assert_hidden(answer, alice_tokens + bob_tokens)
    # One SCAN, then PTTL + STRLEN + GETRANGE per token in one pipeline.
    assert answer["commands"] == 1 + 3 * 4
    assert "4 session(s) found" in answer["summary"]


async def test_fastapi_users_one_users_tokens(make: MakeApp, real_target: Target) -> None:
    alice, bob = User(), User()
    alice_tokens = await write_tokens(real_target.url, alice, 3, 600)
    bob_tokens = await write_tokens(real_target.url, bob, 2, 600)
    answer = await list_sessions(make("fastapi-users"), user=str(bob.id))
    assert answer["user"] == str(bob.id)
    assert {s["fingerprint"] for s in answer["sessions"]} == {fingerprint(t) for t in bob_tokens}
    assert all(s["owner"] == str(bob.id) for s in answer["sessions"])
    assert_hidden(answer, alice_tokens + bob_tokens)
    assert f"of user {str(bob.id)!r}" in answer["summary"]


async def test_fastapi_users_paging_within_the_scan_budget(
    make: MakeApp, real_target: Target
) -> None:
    users = [User() for _ in range(5)]
    tokens: list[str] = []
    for user in users:
        tokens += await write_tokens(real_target.url, user, 4, 600)
    app = make("fastapi-users", scan_budget=7)
    seen: list[str] = []
    calls = 0
    cursor: str | None = None
    async with Client(build_server(app)) as client:
        while True:
            arguments: dict[str, Any] = {"limit": 3}
            if cursor is not None:
                arguments["cursor"] = cursor
            result = await client.call_tool("list_sessions", arguments)
            answer = result.structured_content
            assert answer is not None, error_text(result)
            assert len(answer["sessions"]) <= 3
            assert answer["scanned"] <= 7
            assert_hidden(answer, tokens)
            seen += [s["fingerprint"] for s in answer["sessions"]]
            calls += 1
            cursor = answer["next_cursor"]
            if cursor is None:
                assert answer["complete"] is True
                break
            assert answer["complete"] is False
            assert "continue with next_cursor" in answer["summary"]
    assert calls > 1
    assert set(seen) == {fingerprint(t) for t in tokens}


async def test_cursor_of_another_user_is_refused(make: MakeApp, real_target: Target) -> None:
    user = User()
    await write_tokens(real_target.url, user, 5, 600)
    app = make("fastapi-users")
    first = await list_sessions(app, limit=2)
    assert first["next_cursor"] is not None
    result = await call_tool(app, "list_sessions", {"cursor": first["next_cursor"], "user": "x"})
    assert "different call" in error_text(result)


# -- Flask-Session --------------------------------------------------------------------


def flask_login(real_target: Target, serialization: str) -> tuple[str, bytes]:
    """A request to a Flask app with Flask-Session on Redis; returns the session cookie
    (the session id) and the stored key."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test",
        SESSION_TYPE="redis",
        SESSION_REDIS=real_target.raw,
        SESSION_SERIALIZATION_FORMAT=serialization,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=2),
    )
    FlaskSession(app)

    @app.route("/login")
    def login() -> str:
        session["user_id"] = "u-1001"
        session["cart"] = [1, 2, 3]
        session["email"] = "shopper@example.com"
        return "ok"

    with app.test_client() as client:
        response = client.get("/login")
        assert response.status_code == 200
        cookie = client.get_cookie("session")
        assert cookie is not None
        sid = cookie.value
    return sid, f"session:{sid}".encode()


@pytest.mark.parametrize(("serialization", "fmt"), [("msgpack", "msgpack"), ("json", "json")])
async def test_flask_session(
    make: MakeApp, real_target: Target, serialization: str, fmt: str
) -> None:
    sid, key = flask_login(real_target, serialization)
    assert real_target.raw.exists(key)
    answer = await list_sessions(make("flask-session"))
    (entry,) = answer["sessions"]
    assert entry["format"] == fmt
    assert set(entry["data_keys"]) == {"_permanent", "user_id", "cart", "email"}
    assert entry["owner"] is None
    assert entry["session_id"] == redact_credential(sid)
    assert entry["fingerprint"] == fingerprint(sid)
    assert entry["size"] == real_target.raw.strlen(key)
    assert_expires(entry, 7200)
    # Values are never shown: not the e-mail, not the user id.
    assert_hidden(answer, [sid, "shopper@example.com", "u-1001"])
    (store,) = answer["stores"]
    assert store["searched"] is True
    assert "not read" in store["owner"]


async def test_flask_session_without_msgpack(
    make: MakeApp, real_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions_module, "_msgpack", lambda: None)
    sid, _key = flask_login(real_target, "msgpack")
    answer = await list_sessions(make("flask-session"))
    (entry,) = answer["sessions"]
    assert entry["format"] == "msgpack"
    assert entry["data_keys"] is None
    assert "not installed" in entry["note"]
    assert_hidden(answer, [sid])


async def test_flask_sessions_cannot_be_filtered_by_user(
    make: MakeApp, real_target: Target
) -> None:
    flask_login(real_target, "msgpack")
    answer = await list_sessions(make("flask-session"), user="u-1001")
    assert answer["sessions"] == []
    (store,) = answer["stores"]
    assert store["searched"] is False
    assert "cannot filter by user" in store["note"]
    assert answer["commands"] == 0


# -- starsessions -----------------------------------------------------------------------


async def star_write(url: str, data: dict[str, Any], lifetime: int) -> str:
    client = aioredis.Redis.from_url(url)
    try:
        store = RedisStore(connection=client)
        sid = generate_session_id()
        await store.write(sid, JsonSerializer().serialize(data), lifetime=lifetime, ttl=lifetime)
        return sid
    finally:
        await client.aclose()


async def test_starsessions(make: MakeApp, real_target: Target) -> None:
    small = await star_write(real_target.url, {"user": "annabelle-7", "theme": "dark"}, 900)
    big = await star_write(real_target.url, {"blob": "x" * 10_000}, 0)
    answer = await list_sessions(make("starsessions"))
    by_fp = {s["fingerprint"]: s for s in answer["sessions"]}
    entry = by_fp[fingerprint(small)]
    assert entry["format"] == "json"
    assert entry["data_keys"] == ["user", "theme"]
    assert entry["key"] == f"starsessions.{redact_credential(small)}"
    assert_expires(entry, 900)
    # lifetime 0 (a browser-session cookie): starsessions falls back to its 30-day gc_ttl.
    large = by_fp[fingerprint(big)]
    assert_expires(large, 30 * 86400)
    assert large["data_keys"] is None
    assert "larger than" in large["note"]
    assert large["size"] == len(JsonSerializer().serialize({"blob": "x" * 10_000}))
    assert_hidden(answer, [small, big, "annabelle-7"])


# -- Django cache sessions via django-redis -----------------------------------------------


@pytest.fixture
def django_cache(real_target: Target) -> Iterator[None]:
    from django.conf import settings  # type: ignore[import-untyped]
    from django.core.cache import caches  # type: ignore[import-untyped]
    from django.test.utils import override_settings  # type: ignore[import-untyped]

    if not settings.configured:
        settings.configure(USE_TZ=True, INSTALLED_APPS=["django.contrib.sessions"])
        import django  # type: ignore[import-untyped]

        django.setup()
    with override_settings(
        CACHES={
            "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": real_target.url}
        },
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        SESSION_COOKIE_AGE=1800,
    ):
        yield
        caches["default"].close()


@pytest.mark.usefixtures("django_cache")
async def test_django_cache_sessions(make: MakeApp, real_target: Target) -> None:
    from asgiref.sync import sync_to_async
    from django.contrib.sessions.backends.cache import SessionStore  # type: ignore[import-untyped]

    def login() -> str:
        store = SessionStore()
        store["_auth_user_id"] = "31337"
        store.save()
        key: str = store.session_key
        return key

    session_key = await sync_to_async(login)()
    key = f":1:django.contrib.sessions.cache{session_key}".encode()
    assert real_target.raw.exists(key)
    answer = await list_sessions(make("django"))
    (entry,) = answer["sessions"]
    assert entry["format"] == "pickle"
    assert entry["data_keys"] is None
    assert "never unpickled" in entry["note"]
    assert entry["owner"] is None
    assert entry["size"] == real_target.raw.strlen(key)
    assert entry["namespace"] == "session_cache"
    assert_expires(entry, 1800)
    assert_hidden(answer, [session_key, "31337"])


# -- MITA: no sessions in Redis ----------------------------------------------------------


def mita_user_keys(target: Target, uid: str) -> tuple[list[str], float]:
    """What MITA writes about a user: revoked jtis, and a per-user sliding log."""
    jtis = [str(uuid.uuid4()) for _ in range(3)]
    target.raw.sadd(f"mita:user:tokens:{uid}", *jtis)
    target.raw.expire(f"mita:user:tokens:{uid}", 7 * 86400)
    now = time.time()
    log = f"rate_limit:api_general:user:{uid}"
    for moment in (now - 30, now - 10, now):
        target.raw.zadd(log, {str(moment): moment})
    target.raw.expire(log, 3600 + 60)
    return jtis, now


async def test_mita_says_there_are_no_sessions(make: MakeApp) -> None:
    answer = await list_sessions(make("mita"))
    assert answer["sessions"] == []
    assert answer["stores"] == []
    (store,) = answer["no_session_store"]
    assert store["profile"] == "mita"
    assert "stateless JWT" in store["reason"]
    assert store["user_footprint"] is None
    assert "keeps no sessions in Redis" in answer["summary"]
    assert "does not mean that no one is logged in" in answer["summary"]
    assert "Pass `user`" in answer["summary"]
    assert answer["commands"] == 0


async def test_mita_shows_what_redis_knows_about_a_user(make: MakeApp, real_target: Target) -> None:
    jtis, now = mita_user_keys(real_target, "42")
    mita_user_keys(real_target, "420")  # a user whose id starts the same: not mixed in
    real_target.raw.zadd("rate_limit:auth_login:client:0123456789abcdef", {str(now): now})
    answer = await list_sessions(make("mita"), user="42")
    assert answer["sessions"] == []
    footprint = answer["no_session_store"][0]["user_footprint"]
    assert footprint["user"] == "42"
    assert footprint["revoked_tokens"] == 3
    assert footprint["complete"] is True
    by_key = {k["key"]: k for k in footprint["keys"]}
    assert set(by_key) == {"mita:user:tokens:42", "rate_limit:api_general:user:42"}
    revoked = by_key["mita:user:tokens:42"]
    assert revoked["type"] == "set"
    assert sorted(revoked["members"]) == sorted(jtis)
    assert revoked["members_complete"] is True
    assert revoked["size"] == 3
    assert 7 * 86400 - 3 <= revoked["ttl_seconds"] <= 7 * 86400
    assert "not active sessions" in revoked["meaning"]
    activity = by_key["rate_limit:api_general:user:42"]
    assert activity["kind"] == "rate_limit"
    assert activity["size"] == 3
    assert abs(datetime.fromisoformat(activity["latest_at"]).timestamp() - now) <= 1
    assert "3 revoked token(s) and 1 rate-limit key(s)" in answer["summary"]


async def test_mita_user_with_nothing_in_redis(make: MakeApp) -> None:
    answer = await list_sessions(make("mita"), user="nobody")
    footprint = answer["no_session_store"][0]["user_footprint"]
    assert footprint["keys"] == []
    assert footprint["revoked_tokens"] == 0
    assert "0 revoked token(s) and 0 rate-limit key(s)" in answer["summary"]


async def test_mita_with_fastapi_users(make: MakeApp, real_target: Target) -> None:
    user = User()
    tokens = await write_tokens(real_target.url, user, 2, 600)
    mita_user_keys(real_target, str(user.id))
    answer = await list_sessions(make("mita", "fastapi-users"), user=str(user.id))
    assert {s["fingerprint"] for s in answer["sessions"]} == {fingerprint(t) for t in tokens}
    footprint = answer["no_session_store"][0]["user_footprint"]
    assert footprint["revoked_tokens"] == 3
    assert "keeps no sessions" in answer["summary"]
    assert "2 session(s)" in answer["summary"]
    assert_hidden(answer, tokens)


async def test_user_footprint_only_on_the_first_page(make: MakeApp, real_target: Target) -> None:
    user = User()
    await write_tokens(real_target.url, user, 3, 600)
    mita_user_keys(real_target, str(user.id))
    app = make("mita", "fastapi-users")
    first = await list_sessions(app, user=str(user.id), limit=1)
    assert first["next_cursor"] is not None
    second = await list_sessions(app, user=str(user.id), limit=1, cursor=first["next_cursor"])
    assert first["no_session_store"][0]["user_footprint"] is not None
    assert second["no_session_store"] == []
