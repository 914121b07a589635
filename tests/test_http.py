"""End to end over Streamable HTTP: ``mita-redis-mcp serve --transport http`` started for
real, driven by the SDK's HTTP client (and raw HTTP for what a client never sends),
against a real redis-server.

Each attack gets its test: no token, a wrong token, a non-loopback bind without a
token, an oversized body, a foreign Origin (DNS rebinding), a permissive CORS answer,
more sessions than allowed.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import SecretStr

from mita_redis_mcp.app import App
from mita_redis_mcp.config import Settings
from mita_redis_mcp.errors import ConfigError
from mita_redis_mcp.http import (
    MAX_BODY_BYTES,
    MAX_SESSIONS,
    HttpProtocol,
    build_http_app,
    uvicorn_config,
)
from mita_redis_mcp.server import build_server
from tests.conftest import READ_TOOLS
from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.anyio

TOKEN = "http-test-token-0123456789abcdef"
WRONG_TOKEN = "http-test-token-WRONG-456789abcdef"
INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@dataclass
class HttpServer:
    url: str
    stderr: Path


def server_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/"),
        "REDIS_URL": redis_url,
        "MITA_REDIS_MCP_PREFIXES": "app:",
        **extra,
    }


@asynccontextmanager
async def serving(env: dict[str, str], tmp_path: Path, *args: str) -> AsyncIterator[HttpServer]:
    """The server on a free port, once it accepts connections; stopped by pid after."""
    port = free_port()
    stderr = tmp_path / "stderr"
    command = [sys.executable, "-m", "mita_redis_mcp", "serve", "--transport", "http"]
    with stderr.open("w") as errlog:
        process = await anyio.open_process(
            [*command, "--port", str(port), *args], env=env, stdout=errlog, stderr=errlog
        )
        try:
            with anyio.fail_after(30):
                while True:
                    assert process.returncode is None, stderr.read_text()
                    try:
                        stream = await anyio.connect_tcp("127.0.0.1", port)
                    except OSError:
                        await anyio.sleep(0.05)
                    else:
                        await stream.aclose()
                        break
            yield HttpServer(f"http://127.0.0.1:{port}/mcp", stderr)
        finally:
            os.kill(process.pid, signal.SIGTERM)
            with anyio.fail_after(15):
                code = await process.wait()
            # uvicorn re-raises the SIGTERM it handled, once shut down cleanly.
            assert code in (0, -signal.SIGTERM), stderr.read_text()


@pytest.fixture
def seeded(redis_server: ServerProcess) -> ServerProcess:
    with redis_server.client() as raw:
        raw.flushall()
        raw.set("app:greeting", "hello")
        raw.set("other:secret", "not for the model")
    return redis_server


@asynccontextmanager
async def mcp_client(
    url: str, token: str | None, responses: list[httpx2.Response]
) -> AsyncIterator[Client]:
    """The SDK's client over Streamable HTTP; every HTTP response lands in ``responses``."""

    async def record(response: httpx2.Response) -> None:
        responses.append(response)

    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers, event_hooks={"response": [record]}) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


def mcp_errors(group: BaseException) -> list[MCPError]:
    if isinstance(group, MCPError):
        return [group]
    if isinstance(group, BaseExceptionGroup):
        return [error for inner in group.exceptions for error in mcp_errors(inner)]
    return []


def assert_no_permissive_cors(responses: list[httpx2.Response]) -> None:
    assert responses
    for response in responses:
        assert "access-control-allow-origin" not in response.headers, response.headers


async def test_right_token_lists_and_calls_tools(seeded: ServerProcess, tmp_path: Path) -> None:
    responses: list[httpx2.Response] = []
    env = server_env(seeded.url, MITA_REDIS_MCP_HTTP_TOKEN=TOKEN)
    with anyio.fail_after(60):
        async with (
            serving(env, tmp_path) as server,
            mcp_client(server.url, TOKEN, responses) as client,
        ):
            tools = (await client.list_tools()).tools
            got = await client.call_tool("get", {"key": "app:greeting"})
            refused = await client.call_tool("get", {"key": "other:secret"})

    assert [tool.name for tool in tools] == READ_TOOLS
    assert not got.is_error
    assert got.structured_content is not None
    assert got.structured_content["value"]["value"] == "hello"
    assert refused.is_error
    assert_no_permissive_cors(responses)
    assert {response.status_code for response in responses} <= {200, 202, 204}
    log = server.stderr.read_text()
    assert TOKEN not in log
    assert "http://127.0.0.1:" in log


@pytest.mark.parametrize("token", [None, WRONG_TOKEN, TOKEN[:-1], TOKEN + "x"])
async def test_missing_or_wrong_token_gets_401(
    seeded: ServerProcess, tmp_path: Path, token: str | None
) -> None:
    responses: list[httpx2.Response] = []
    env = server_env(seeded.url, MITA_REDIS_MCP_HTTP_TOKEN=TOKEN)
    with anyio.fail_after(60):
        async with serving(env, tmp_path) as server:
            with pytest.raises(BaseExceptionGroup) as caught:
                async with mcp_client(server.url, token, responses):
                    pytest.fail("connected without the right token")

    assert [error.error.message for error in mcp_errors(caught.value)] == [
        "Unauthorized: missing or wrong bearer token"
    ]
    assert responses
    assert {response.status_code for response in responses} == {401}
    assert all(r.headers["www-authenticate"] == "Bearer" for r in responses)
    assert_no_permissive_cors(responses)
    log = server.stderr.read_text()
    assert "missing or wrong bearer token" in log
    assert TOKEN not in log
    if token is not None:
        assert token not in log


async def test_token_file_is_required_even_on_loopback(
    seeded: ServerProcess, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with anyio.fail_after(60):
        async with (
            serving(
                server_env(seeded.url), tmp_path, "--http-token-file", str(token_file)
            ) as server,
            httpx2.AsyncClient() as http,
        ):
            bare = await http.post(server.url, json=INITIALIZE, headers=MCP_HEADERS)
            authorized = await http.post(
                server.url,
                json=INITIALIZE,
                headers={**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"},
            )
    assert bare.status_code == 401
    assert authorized.status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "redis-mcp.internal"])
def test_non_loopback_bind_without_token_refuses_to_start(host: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mita_redis_mcp", "serve", "--transport", "http", "--host", host],
        env=server_env("redis://127.0.0.1:1/0", MITA_REDIS_MCP_HTTP_ALLOWED_HOSTS="mcp.example"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"refusing to listen on {host} without a bearer token" in result.stderr
    assert "MITA_REDIS_MCP_HTTP_TOKEN" in result.stderr
    assert result.stdout == ""


async def test_oversized_body_gets_413(seeded: ServerProcess, tmp_path: Path) -> None:
    env = server_env(seeded.url, MITA_REDIS_MCP_HTTP_TOKEN=TOKEN)
    padding = "x" * (MAX_BODY_BYTES + 1)
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
    with anyio.fail_after(60):
        async with serving(env, tmp_path) as server, httpx2.AsyncClient() as http:
            big = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": padding}}
            declared = await http.post(server.url, json=big, headers=headers)

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(MAX_BODY_BYTES // 65536 + 2):
                    yield b" " * 65536

            # Chunked: no Content-Length to refuse on, so the limit counts the bytes.
            streamed = await http.post(
                server.url,
                content=chunks(),
                headers={**headers, "Content-Type": "application/json"},
            )
            # Unauthenticated: refused before a byte of the body is read.
            anonymous = await http.post(server.url, json=big, headers=MCP_HEADERS)
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert anonymous.status_code == 401


async def test_foreign_origin_and_host_are_refused(seeded: ServerProcess, tmp_path: Path) -> None:
    env = server_env(seeded.url, MITA_REDIS_MCP_HTTP_TOKEN=TOKEN)
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
    with anyio.fail_after(60):
        async with serving(env, tmp_path) as server, httpx2.AsyncClient() as http:
            port = server.url.split(":")[2].split("/")[0]
            foreign = await http.post(
                server.url, json=INITIALIZE, headers={**headers, "Origin": "http://evil.example"}
            )
            rebound = await http.post(
                server.url,
                json=INITIALIZE,
                headers={**headers, "Host": f"evil.example:{port}"},
            )
            local = await http.post(
                server.url,
                json=INITIALIZE,
                headers={**headers, "Origin": f"http://localhost:{port}"},
            )
            preflight = await http.options(
                server.url,
                headers={
                    "Origin": "http://evil.example",
                    "Access-Control-Request-Method": "POST",
                    "Authorization": f"Bearer {TOKEN}",
                },
            )
    assert foreign.status_code == 403
    assert rebound.status_code == 421
    assert local.status_code == 200
    assert preflight.status_code >= 400
    assert_no_permissive_cors([foreign, rebound, local, preflight])


async def test_sessions_beyond_the_limit_get_503(seeded: ServerProcess, tmp_path: Path) -> None:
    env = server_env(seeded.url, MITA_REDIS_MCP_HTTP_TOKEN=TOKEN)
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
    with anyio.fail_after(60):
        async with serving(env, tmp_path) as server, httpx2.AsyncClient() as http:
            opened: list[str] = []
            for _ in range(MAX_SESSIONS):
                response = await http.post(server.url, json=INITIALIZE, headers=headers)
                assert response.status_code == 200
                opened.append(response.headers["mcp-session-id"])
            refused = await http.post(server.url, json=INITIALIZE, headers=headers)
            closed = await http.delete(server.url, headers={**headers, "mcp-session-id": opened[0]})
            again = await http.post(server.url, json=INITIALIZE, headers=headers)
    assert refused.status_code == 503
    assert closed.status_code == 200
    assert again.status_code == 200


async def until(condition: Callable[[], bool]) -> None:
    # uvicorn's server has flags and sets, no event to wait on.
    while not condition():  # noqa: ASYNC110
        await anyio.sleep(0.01)


def post_and_reset(port: int) -> bytes:
    """A POST without the token; once its whole answer is read, the connection is
    closed with a reset (SO_LINGER 0), as a client does that closes with bytes unread."""
    request = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while True:
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if length is not None and len(body) >= int(length.group(1)):
                break
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return answer


async def test_connections_reset_by_the_client_are_let_go(seeded: ServerProcess) -> None:
    """uvicorn stops a connection's keep-alive timer only on a clean close: after a reset
    the timer kept the closed connection, its request and its scope for 5 s (the SDK's
    client resets many of its connections: 15 MB over a soak). None may keep one."""
    settings = Settings(
        redis_url=SecretStr(seeded.url),
        prefixes=("app:",),
        http_port=free_port(),
        http_token=SecretStr(TOKEN),
    )
    app = build_http_app(build_server(App.from_settings(settings)), settings)
    server = uvicorn.Server(uvicorn_config(app, settings))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        with anyio.fail_after(30):
            await until(lambda: server.started)
            for _ in range(20):
                answer = await anyio.to_thread.run_sync(post_and_reset, settings.http_port)
                assert answer.startswith(b"HTTP/1.1 401"), answer
            await until(lambda: not server.server_state.connections)
        gc.collect()
        closed = [o for o in gc.get_objects() if isinstance(o, HttpProtocol)]
        server.should_exit = True
    assert all(protocol.timeout_keep_alive_task is None for protocol in closed)


def test_the_token_is_never_shown() -> None:
    settings = Settings.load(
        {}, {"MITA_REDIS_MCP_HTTP_TOKEN": TOKEN, "MITA_REDIS_MCP_PREFIXES": "a:"}
    )
    assert settings.http_token is not None
    assert TOKEN not in repr(settings)
    assert settings.http_token.get_secret_value() == TOKEN


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MITA_REDIS_MCP_HTTP_TOKEN": "short"}, "at least 16 characters"),
        ({"MITA_REDIS_MCP_HTTP_TOKEN": "has a space in the middle"}, "without spaces"),
        ({"MITA_REDIS_MCP_TRANSPORT": "sse"}, "must be stdio or http"),
        ({"MITA_REDIS_MCP_HTTP_PORT": "70000"}, "between 1 and 65535"),
        ({"MITA_REDIS_MCP_HTTP_HOST": "not a host"}, "IP address or a host name"),
        (
            {
                "MITA_REDIS_MCP_TRANSPORT": "http",
                "MITA_REDIS_MCP_HTTP_HOST": "0.0.0.0",
                "MITA_REDIS_MCP_HTTP_TOKEN": TOKEN,
            },
            "--http-allowed-host",
        ),
    ],
)
def test_bad_http_settings_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load({}, {"MITA_REDIS_MCP_PREFIXES": "a:", **environ})
    text = str(caught.value)
    assert message in text
    token = environ.get("MITA_REDIS_MCP_HTTP_TOKEN")
    assert token is None or token not in text
