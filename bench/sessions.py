"""MCP servers over a real stdio session: the SDK's stdio client spawns the server, and
``Server`` calls its tools either as a client normally does (``call``: ClientSession's
call_tool, which validates structured output against the tool's output schema) or
without that client-side validation (``raw``: the same request through send_request)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolRequest, CallToolRequestParams, CallToolResult
from processes import ProcStats, Reaper, children, proc_stats


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
        if len(new) != 1:
            raise RuntimeError(f"expected one new {marker!r} process, found {sorted(new)}")
        pid = new.pop()
        reaper.track(pid)
        async with ClientSession(read, write) as session:
            await session.initialize()
            await session.list_tools()
            ready = time.perf_counter() - started
            yield Server(session, pid, ready)


def answer_bytes(result: CallToolResult) -> int:
    """Size of the tool's answer as JSON (content and structured content)."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True).encode())


def structured(result: CallToolResult) -> dict[str, Any]:
    if result.is_error or result.structured_content is None:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(f"the tool call failed: {text[:500]}")
    return result.structured_content
