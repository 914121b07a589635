"""End to end over stdio: the server as a client launches it (``python -m mita_redis_mcp``
and the ``mita-redis-mcp`` console script), against a real redis-server.

The SDK's stdio client drives most tests; one test speaks raw JSON-RPC to a process it
spawns itself, to check byte by byte that stdout carries the protocol and nothing else,
and that the Redis password reaches neither stdout nor the log on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, jsonrpc_message_adapter

from mita_redis_mcp import __version__
from tests.conftest import READ_TOOLS, TOOLS_WITH_WRITES, answer_of
from tests.servers import ServerProcess, free_port, running, start_server

pytestmark = pytest.mark.anyio

PASSWORD = "s3cr3t-Pa55w0rd-do-not-leak"
WRONG_PASSWORD = "wr0ng-Pa55w0rd-do-not-leak"
MAX_LINE = 16 * 1024 * 1024


def server_env(url: str, **extra: str) -> dict[str, str]:
    """What a client's ``env`` block would carry: the settings, PATH and HOME."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/"),
        # The undo journal's home: the suite's temporary one (see conftest.journal_home).
        "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"],
        "REDIS_URL": url,
        "MITA_REDIS_MCP_PREFIXES": "app:",
        **extra,
    }


@asynccontextmanager
async def connect(
    env: dict[str, str],
    stderr: Path,
    *,
    command: str = sys.executable,
    args: tuple[str, ...] = ("-m", "mita_redis_mcp"),
    mode: Literal["auto", "legacy"] = "auto",
) -> AsyncIterator[Client]:
    """An SDK client on a freshly spawned server; its stderr goes to the file ``stderr``."""
    params = StdioServerParameters(command=command, args=list(args), env=env)
    with stderr.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode=mode) as client:
            yield client


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture
def seeded(redis_server: ServerProcess) -> ServerProcess:
    """The session's redis-server, emptied, with two keys in scope and one outside."""
    with redis_server.client() as raw:
        raw.flushall()
        raw.set("app:greeting", "hello")
        raw.hset("app:profile", mapping={"name": "Dana", "plan": "pro"})
        raw.set("other:secret", "not for the model")
    return redis_server


async def test_initialize_lists_read_tools_with_schemas(
    seeded: ServerProcess, tmp_path: Path
) -> None:
    with anyio.fail_after(30):
        async with connect(server_env(seeded.url), tmp_path / "stderr", mode="legacy") as client:
            assert client.server_info is not None
            assert client.server_info.name == "mita-redis-mcp"
            assert client.server_info.version == __version__
            assert client.instructions is not None
            assert "'app:'" in client.instructions
            assert "read-only" in client.instructions
            tools = (await client.list_tools()).tools

    assert [tool.name for tool in tools] == READ_TOOLS
    for tool in tools:
        assert tool.description, tool.name
        assert tool.input_schema["type"] == "object"
        properties = tool.input_schema["properties"]
        # LATENCY LATEST and CLIENT LIST take nothing; every other tool has inputs.
        assert bool(properties) != (tool.name in ("latency", "clients")), tool.name
        for name, schema in properties.items():
            assert schema.get("description"), f"{tool.name}.{name} has no description"
        assert tool.output_schema is not None, tool.name
        assert {"commands", "demo"} <= set(tool.output_schema["properties"])
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True, tool.name
        assert tool.annotations.destructive_hint is not True, tool.name


async def test_get_keys_info_answer_over_stdio(seeded: ServerProcess, tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with connect(server_env(seeded.url), tmp_path / "stderr") as client:
            got = answer_of(await client.call_tool("get", {"key": "app:greeting"}))
            listed = answer_of(await client.call_tool("keys", {"pattern": "*"}))
            profile = answer_of(await client.call_tool("get", {"key": "app:profile"}))
            info = answer_of(await client.call_tool("info", {"section": "keyspace"}))

    assert got["value"]["value"] == "hello"
    assert got["type"] == "string"
    assert got["complete"] is True
    assert got["demo"] is False
    assert got["commands"] > 0

    assert sorted(entry["key"] for entry in listed["keys"]) == ["app:greeting", "app:profile"]
    assert listed["complete"] is True
    assert listed["prefixes"] == ["app:"]

    fields = {item["field"]["value"]: item["value"]["value"] for item in profile["fields"]}
    assert fields == {"name": "Dana", "plan": "pro"}

    keyspace = info["sections"]["keyspace"]
    assert isinstance(keyspace, dict)
    assert keyspace["db0"]["keys"] == 3


async def test_console_script_serves_over_stdio(seeded: ServerProcess, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "mita-redis-mcp"
    assert script.is_file(), f"the console script is not installed next to {sys.executable}"
    with anyio.fail_after(30):
        async with connect(
            server_env(seeded.url), tmp_path / "stderr", command=str(script), args=("serve",)
        ) as client:
            tools = (await client.list_tools()).tools
            got = answer_of(await client.call_tool("get", {"key": "app:greeting"}))
    assert [tool.name for tool in tools] == READ_TOOLS
    assert got["value"]["value"] == "hello"


async def test_write_tools_are_hidden_and_refused_by_default(
    seeded: ServerProcess, tmp_path: Path
) -> None:
    with anyio.fail_after(30):
        async with connect(server_env(seeded.url), tmp_path / "stderr") as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            deleted = await client.call_tool("delete", {"keys": ["app:greeting"]})
            written = await client.call_tool("set", {"key": "app:greeting", "value": "bye"})

    assert names == READ_TOOLS
    assert deleted.is_error
    assert "writes are disabled" in text_of(deleted)
    assert written.is_error
    assert "writes are disabled" in text_of(written)
    with seeded.client() as raw:
        assert raw.get("app:greeting") == b"hello"


async def test_write_tools_are_listed_when_writes_are_allowed(
    seeded: ServerProcess, tmp_path: Path
) -> None:
    env = server_env(seeded.url, MITA_REDIS_MCP_ALLOW_WRITES="1")
    with anyio.fail_after(30):
        async with connect(env, tmp_path / "stderr") as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            written = answer_of(await client.call_tool("set", {"key": "app:new", "value": "v"}))
            deleted = answer_of(await client.call_tool("delete", {"keys": ["app:greeting"]}))

    assert list(tools) == TOOLS_WITH_WRITES
    for name in ("set", "delete"):
        annotations = tools[name].annotations
        assert annotations is not None
        assert annotations.read_only_hint is False
        assert annotations.destructive_hint is True
    assert written["written"] is True
    assert deleted["deleted"] == 1
    with seeded.client() as raw:
        assert raw.get("app:new") == b"v"
        assert raw.exists("app:greeting") == 0


async def test_demo_mode_answers_without_any_redis(tmp_path: Path) -> None:
    # Nothing listens on this port: every answer must come from the demo keyspace.
    env = server_env(f"redis://127.0.0.1:{free_port()}/0")
    del env["MITA_REDIS_MCP_PREFIXES"]
    stderr = tmp_path / "stderr"
    with anyio.fail_after(30):
        async with connect(env, stderr, args=("-m", "mita_redis_mcp", "--demo")) as client:
            assert client.instructions is not None
            assert "DEMO MODE" in client.instructions
            metrics = answer_of(await client.call_tool("get", {"key": "mita:blacklist:metrics"}))
            listed = answer_of(await client.call_tool("keys", {"pattern": "rate_limit:*"}))
            info = answer_of(await client.call_tool("info", {}))
            hidden = await client.call_tool("get", {"key": "session:do-not-show"})

    assert metrics["demo"] is True
    assert metrics["type"] == "hash"
    assert {item["field"]["value"] for item in metrics["fields"]} == {
        "total_blacklisted",
        "access_tokens_blacklisted",
        "refresh_tokens_blacklisted",
    }
    assert listed["demo"] is True
    assert listed["keys"]
    assert all(entry["key"].startswith("rate_limit:") for entry in listed["keys"])
    assert info["demo"] is True
    assert hidden.is_error
    assert "outside the allowed prefixes" in text_of(hidden)
    assert "demo keyspace" in stderr.read_text()


class RawSession:
    """JSON-RPC over a spawned server's pipes, keeping every line its stdout carried."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self.stdin = process.stdin
        self.stdout = BufferedByteReceiveStream(process.stdout)
        self.lines: list[bytes] = []
        self.next_id = 1

    async def send(self, message: dict[str, Any]) -> None:
        await self.stdin.send(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and read lines until its response arrives."""
        request_id = self.next_id
        self.next_id += 1
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        while True:
            line = await self.stdout.receive_until(b"\n", MAX_LINE)
            self.lines.append(line)
            reply = json.loads(line)
            if reply.get("id") == request_id:
                assert isinstance(reply, dict)
                return reply

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        reply = await self.request("tools/call", {"name": name, "arguments": arguments})
        assert "result" in reply, reply
        result = reply["result"]
        assert isinstance(result, dict)
        return result

    async def finish(self) -> int:
        """Close stdin as a client does at the end; collect what stdout still carries."""
        await self.stdin.aclose()
        try:
            while True:
                self.lines.append(await self.stdout.receive_until(b"\n", MAX_LINE))
        except anyio.IncompleteRead:
            pass
        assert self.stdout.buffer == b"", "stdout ended with a partial line"
        return await self.process.wait()


def _error_text(result: dict[str, Any]) -> str:
    assert result.get("isError") is True, result
    return " ".join(block.get("text", "") for block in result["content"])


async def test_stdout_carries_only_protocol_and_no_password(binary: str, tmp_path: Path) -> None:
    redis = start_server(binary, password=PASSWORD)
    stderr_path = tmp_path / "stderr"
    env = server_env(
        redis.url,
        MITA_REDIS_MCP_LOG_LEVEL="DEBUG",
        MITA_REDIS_MCP_COMMAND_TIMEOUT="2",
    )
    assert PASSWORD in env["REDIS_URL"]
    try:
        with redis.client() as raw:
            raw.set("app:x", "before")
        with anyio.fail_after(60), stderr_path.open("w") as stderr:
            process = await anyio.open_process(
                [sys.executable, "-m", "mita_redis_mcp"], env=env, stderr=stderr
            )
            async with process:
                session = RawSession(process)
                init = await session.request(
                    "initialize",
                    {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "raw-test", "version": "0"},
                    },
                )
                assert init["result"]["serverInfo"]["name"] == "mita-redis-mcp"
                await session.send({"method": "notifications/initialized"})

                listed = await session.request("tools/list")
                assert [t["name"] for t in listed["result"]["tools"]] == READ_TOOLS

                refused = await session.call("get", {"key": "other:secret"})
                assert "outside the allowed prefixes" in _error_text(refused)

                first = await session.call("get", {"key": "app:x"})
                assert first["structuredContent"]["value"]["value"] == "before"

                port = redis.port
                redis.stop()
                unreachable = await session.call("get", {"key": "app:x"})
                assert "cannot reach Redis" in _error_text(unreachable)

                unknown = await session.call("no_such_tool", {})
                assert "no_such_tool" in _error_text(unknown)

                # The server survived the errors; once Redis is back, it reconnects.
                redis = start_server(binary, password=PASSWORD, port=port)
                with redis.client() as raw:
                    raw.set("app:x", "after")
                again = await session.call("get", {"key": "app:x"})
                assert again["structuredContent"]["value"]["value"] == "after"
                assert "result" in await session.request("ping")

                assert await session.finish() == 0
    finally:
        redis.stop()

    # One response per request, and nothing else.
    ids = [json.loads(line).get("id") for line in session.lines]
    assert ids == list(range(1, session.next_id))
    for line in session.lines:
        jsonrpc_message_adapter.validate_json(line)
        assert PASSWORD.encode() not in line
    log = stderr_path.read_text()
    assert "redis://:***@127.0.0.1" in log
    assert PASSWORD not in log


async def test_wrong_password_is_refused_without_echoing_it(binary: str, tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    with running(binary, password=PASSWORD) as redis:
        url = f"redis://default:{WRONG_PASSWORD}@127.0.0.1:{redis.port}/0"
        env = server_env(url, MITA_REDIS_MCP_LOG_LEVEL="DEBUG")
        with anyio.fail_after(30):
            async with connect(env, stderr) as client:
                refused = await client.call_tool("get", {"key": "app:x"})
                listed = await client.call_tool("keys", {})

    for result in (refused, listed):
        assert "refused the credentials" in text_of(result)
        assert WRONG_PASSWORD not in result.model_dump_json()
    log = stderr.read_text()
    assert "redis://default:***@127.0.0.1" in log
    assert WRONG_PASSWORD not in log


# -- the transport (mita_redis_mcp.stdio): the event loop's pipes, no worker threads ----


@asynccontextmanager
async def raw_server(env: dict[str, str], stderr: Path) -> AsyncIterator[RawSession]:
    """A spawned server past the handshake, spoken to in raw JSON-RPC."""
    with stderr.open("w") as errlog:
        process = await anyio.open_process(
            [sys.executable, "-m", "mita_redis_mcp"], env=env, stderr=errlog
        )
        async with process:
            session = RawSession(process)
            await session.request(
                "initialize",
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw-test", "version": "0"},
                },
            )
            await session.send({"method": "notifications/initialized"})
            yield session


async def test_messages_of_megabytes_span_many_pipe_reads_and_writes(
    seeded: ServerProcess, tmp_path: Path
) -> None:
    # A pipe carries 64 KiB at a time: this request and its answer take dozens of reads.
    value = "".join(chr(0x41 + i % 26) for i in range(1024 * 1024 - 7)) + "\u00e9t\u00e9!"
    env = server_env(
        seeded.url, MITA_REDIS_MCP_ALLOW_WRITES="1", MITA_REDIS_MCP_MAX_VALUE_BYTES="2000000"
    )
    with anyio.fail_after(60):
        async with raw_server(env, tmp_path / "stderr") as session:
            written = await session.call("set", {"key": "app:big", "value": value})
            got = await session.call("get", {"key": "app:big"})
            assert await session.finish() == 0
    assert written["structuredContent"]["written"] is True
    assert got["structuredContent"]["value"]["value"] == value
    assert got["structuredContent"]["complete"] is True
    assert max(len(line) for line in session.lines) > 2 * len(value)


async def test_concurrent_requests_get_one_whole_answer_each(
    seeded: ServerProcess, tmp_path: Path
) -> None:
    count = 200
    with anyio.fail_after(60):
        async with raw_server(server_env(seeded.url), tmp_path / "stderr") as session:
            # Every request written before any answer is read: they are served together.
            first = session.next_id
            for offset in range(count):
                key = "app:greeting" if offset % 2 else "app:profile"
                params = {"name": "get", "arguments": {"key": key}}
                await session.send({"id": first + offset, "method": "tools/call", "params": params})
            session.next_id += count
            answers: dict[int, dict[str, Any]] = {}
            while len(answers) < count:
                line = await session.stdout.receive_until(b"\n", MAX_LINE)
                session.lines.append(line)
                reply = json.loads(line)
                answers[reply["id"]] = reply["result"]["structuredContent"]
            assert await session.finish() == 0
    assert sorted(answers) == list(range(first, first + count))
    for request_id, answer in answers.items():
        expected = "string" if (request_id - first) % 2 else "hash"
        assert answer["type"] == expected


async def test_end_of_stdin_stops_the_server_cleanly(seeded: ServerProcess, tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    with anyio.fail_after(30):
        async with raw_server(server_env(seeded.url), stderr) as session:
            await session.send({"id": 99, "method": "tools/list"})
            # stdin closes with the request in flight: it is answered or refused, and
            # the process exits 0 without a traceback.
            assert await session.finish() == 0
    for line in session.lines:
        jsonrpc_message_adapter.validate_json(line)
    assert "Traceback" not in stderr.read_text()


# A process serving stdio.streams() that echoes each request's method back as its
# result, and prints to stdout and writes to fd 1 while doing so: neither may reach the
# protocol's stdout. Each message over 1000 bytes is dropped, the loop going on.
ECHO_SERVER = """
import os, sys, anyio
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCRequest, JSONRPCResponse
from mita_redis_mcp import stdio

async def main():
    async with stdio.streams(limit=1000) as (read, write):
        async for item in read:
            print("stray print", flush=True)
            os.write(1, b"stray write\\n")
            if isinstance(item, Exception):
                sys.stderr.write(f"dropped: {type(item).__name__}\\n")
                continue
            message = item.message
            assert isinstance(message, JSONRPCRequest)
            answer = JSONRPCResponse(jsonrpc="2.0", id=message.id, result={"m": message.method})
            await write.send(SessionMessage(answer))
    print("after serving", flush=True)

anyio.run(main)
"""


async def test_transport_keeps_stray_output_off_stdout_and_drops_long_lines(
    tmp_path: Path,
) -> None:
    requests = [
        b'{"jsonrpc": "2.0", "id": 1, "method": "first"}\n',
        b"\n",
        b'{"jsonrpc": "2.0", "id": 2, "method": "' + b"x" * 2000 + b'"}\n',
        b"not json\n",
        b'{"jsonrpc": "2.0", "id": 3, "method": "caf\xc3\xa9"}\n',
        b'{"jsonrpc": "2.0", "id": 4, "method": "last, no newline"}',
    ]
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-c", ECHO_SERVER], input=b"".join(requests), check=False
        )
    err = done.stderr.decode()
    assert done.returncode == 0, err
    *lines, after = done.stdout.decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"jsonrpc": "2.0", "id": 1, "result": {"m": "first"}},
        {"jsonrpc": "2.0", "id": 3, "result": {"m": "café"}},
        {"jsonrpc": "2.0", "id": 4, "result": {"m": "last, no newline"}},
    ]
    assert after == "after serving"  # once the transport is closed, fd 1 is stdout again
    assert err.count("stray print") == 5
    assert err.count("stray write") == 5
    assert "dropped: MessageTooLong" in err
    assert "dropped: ValidationError" in err
