"""A bare JSON-RPC client on an MCP server's stdio pipes: each request written as one
line, its answer read back as one line, nothing else (no SDK, no validation, no
session machinery). Timed against a server, it shows what the server itself costs a
call, with only a pipe round trip and a JSON parse on the client's side: the SDK's
client adds about 0.15-0.2 ms to every call on this machine (bench/README.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from mcp.client.stdio import get_default_environment
from processes import Reaper

PROTOCOL_VERSION = "2025-06-18"


@dataclass
class BareSession:
    process: asyncio.subprocess.Process
    _next_id: int = field(default=0)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request; return its ``result`` (an error answer raises)."""
        self._next_id += 1
        await self._send(
            {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}
        )
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the server closed stdout before answering {method}")
            message = json.loads(line)
            if message.get("id") != self._next_id:
                continue  # a notification (a log line, progress): not the answer
            if "error" in message:
                raise RuntimeError(f"{method} failed: {message['error']}")
            result: dict[str, Any] = message["result"]
            return result

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """tools/call; a tool error (``isError``) raises, so a timed series of failures
        cannot pass for a fast one."""
        result = await self.request("tools/call", {"name": name, "arguments": arguments})
        if result.get("isError"):
            raise RuntimeError(f"{name} answered an error: {str(result)[:300]}")
        return result


@asynccontextmanager
async def bare_session(
    command: str, args: list[str], env: Mapping[str, str], *, reaper: Reaper
) -> AsyncIterator[BareSession]:
    """Start the server with stdin and stdout as pipes (stderr discarded), initialize it
    as a client would, and yield the session; the server is killed at the end."""
    process = await asyncio.create_subprocess_exec(
        command,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**get_default_environment(), **env},
        limit=2**24,
    )
    reaper.track(process.pid)
    session = BareSession(process)
    try:
        await session.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "bench-bare", "version": "0"},
            },
        )
        await session._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        yield session
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
