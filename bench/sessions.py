"""MCP servers over a real session: the SDK's stdio client spawns the server (``spawn``),
or the server listens on Streamable HTTP behind a bearer token and the SDK's HTTP client
connects to it (``serve_http``). ``Server`` calls its tools either as a client normally
does (``call``: ClientSession's call_tool, which validates structured output against the
tool's output schema) or without that client-side validation (``raw``: the same request
through send_request)."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TextIO

import anyio
import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolRequest, CallToolRequestParams, CallToolResult
from processes import ProcStats, Reaper, children, free_port, proc_stats


@dataclass
class Server:
    session: ClientSession
    pid: int
    ready_seconds: float
    """From spawn to tools/list answered (initialize included)."""

    async def call(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        return await self.session.call_tool(name, arguments)

    async def raw(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        request = CallToolRequest(params=CallToolRequestParams(name=name, arguments=arguments))
        return await self.session.send_request(request, CallToolResult)

    async def validate(self, name: str, result: CallToolResult) -> None:
        await self.session.validate_tool_result(name, result)

    def stats(self) -> ProcStats:
        return proc_stats(self.pid)


@asynccontextmanager
async def spawn(
    command: str,
    args: list[str],
    env: Mapping[str, str],
    *,
    marker: str,
    reaper: Reaper,
    errlog: TextIO,
) -> AsyncIterator[Server]:
    """Start the server as a child (stdio), initialize, list its tools; yield it.

    ``marker`` is a piece of the child's command line, to find its pid in /proc."""
    params = StdioServerParameters(command=command, args=args, env=dict(env))
    before = children(marker)
    started = time.perf_counter()
    async with stdio_client(params, errlog=errlog) as (read, write):
        new = children(marker) - before
        # Between fork and exec the child still carries this script's command line:
        # under load that window is long enough to be seen, so look again briefly.
        with anyio.move_on_after(5):
            while not new:
                await anyio.sleep(0.005)
                new = children(marker) - before
        if len(new) != 1:
            raise RuntimeError(f"expected one new {marker!r} process, found {sorted(new)}")
        pid = new.pop()
        reaper.track(pid)
        async with ClientSession(read, write) as session:
            await session.initialize()
            await session.list_tools()
            ready = time.perf_counter() - started
            yield Server(session, pid, ready)


@asynccontextmanager
async def serve_http(
    command: str, args: list[str], env: Mapping[str, str], *, reaper: Reaper, errlog: TextIO
) -> AsyncIterator[Server]:
    """Start ``command args serve --transport http`` on a free loopback port with a fresh
    bearer token, connect the SDK's Streamable HTTP client with that token, initialize,
    list its tools; yield it. The server is stopped by pid (SIGTERM) at the end."""
    port = free_port()
    token = secrets.token_urlsafe(32)
    started = time.perf_counter()
    process = await anyio.open_process(
        [command, *args, "serve", "--transport", "http", "--port", str(port)],
        env={**env, "MITA_REDIS_MCP_HTTP_TOKEN": token},
        stdout=errlog,
        stderr=errlog,
    )
    reaper.track(process.pid)
    try:
        with anyio.fail_after(120):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"the HTTP server exited with {process.returncode}")
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                except OSError:
                    await anyio.sleep(0.05)
                else:
                    await stream.aclose()
                    break
        url = f"http://127.0.0.1:{port}/mcp"
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=120) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await session.list_tools()
            yield Server(session, process.pid, time.perf_counter() - started)
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGTERM)
            with anyio.fail_after(30):
                await process.wait()


def answer_bytes(result: CallToolResult) -> int:
    """Size of the tool's answer as JSON (content and structured content)."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True).encode())


def structured(result: CallToolResult) -> dict[str, Any]:
    if result.is_error or result.structured_content is None:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(f"the tool call failed: {text[:500]}")
    answer: dict[str, Any] = result.structured_content
    return answer
