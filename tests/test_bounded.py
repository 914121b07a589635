"""Huge values stay bounded: a 50 MiB string, a hash and a sorted set of a million items,
and a million keys, read through the real server process over stdio.

Each answer stays small (JSON under ``ANSWER_BOUND``), says it is incomplete and hands
back a cursor; and the server process never holds the value: its peak resident memory
(VmHWM) stays far below what reading the value whole would need.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from mcp import Client, StdioServerParameters

from tests.conftest import installed
from tests.servers import ServerProcess, redis_binary, running

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MIB = 1024 * 1024
MILLION = 1_000_000
BIG_STRING = "mita:big:string"
BIG_HASH = "mita:big:hash"
BIG_ZSET = "mita:big:zset"
LOAD_PREFIX = "mita:load:"
DEFAULT_MAX_ITEMS = 100
DEFAULT_MAX_VALUE_BYTES = 16_384
DEFAULT_SCAN_BUDGET = 10_000

ANSWER_BOUND = 64 * 1024
# Measured on the development machine (Python 3.11, redis-server 7.0.15): the server
# process peaks at 74 MiB right after the handshake and at 75 MiB after four reads of
# any of these values. Reading the 50 MiB string whole would take it past 124 MiB, and
# a million hash fields or zset members as Python objects past 200 MiB.
PEAK_RSS_BOUND = 120 * MIB
# The growth over the process's own start-up peak, which does not depend on how big
# the interpreter and its imports are on a given machine.
GROWTH_BOUND = 24 * MIB

# Builds items first..last of a key server-side, 1000 items per command: a few seconds
# for a million items, with nothing large crossing the socket.
BUILD = """
local key, kind, first, last = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local args = {}
for i = first, last do
  if kind == 'hash' then
    args[#args + 1] = 'field:' .. i
    args[#args + 1] = 'value:' .. i
  elseif kind == 'zset' then
    args[#args + 1] = 1700000000 + i / 1000
    args[#args + 1] = string.format('%.3f', 1700000000 + i / 1000)
  else
    args[#args + 1] = key .. i
    args[#args + 1] = '1'
  end
  if #args >= 2000 or i == last then
    if kind == 'hash' then
      redis.call('HSET', key, unpack(args))
    elseif kind == 'zset' then
      redis.call('ZADD', key, unpack(args))
    else
      redis.call('MSET', unpack(args))
    end
    args = {}
  end
end
return last
"""
# Items per EVAL: each script stays well under a second, far from Redis's busy-script
# threshold (5 s), even on a loaded machine.
BUILD_CHUNK = 100_000


@pytest.fixture(scope="module")
def big_redis() -> Iterator[ServerProcess]:
    """A redis-server of this module's own holding the huge keys (about 300 MB), stopped
    when the module is done so the rest of the suite does not carry them."""
    binary = installed(redis_binary())
    # Not server.client(): redis-py's default 5 s socket timeout retries a slow command,
    # which would send an EVAL again while the first still runs.
    with (
        running(binary) as server,
        redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=60) as raw,
    ):
        raw.flushall()
        raw.set(BIG_STRING, b"0123456789abcdef" * (50 * MIB // 16))
        for key, kind in ((BIG_HASH, "hash"), (BIG_ZSET, "zset"), (LOAD_PREFIX, "keys")):
            for first in range(1, MILLION + 1, BUILD_CHUNK):
                raw.eval(BUILD, 1, key, kind, str(first), str(first + BUILD_CHUNK - 1))
        assert raw.strlen(BIG_STRING) == 50 * MIB
        assert raw.hlen(BIG_HASH) == MILLION
        assert raw.zcard(BIG_ZSET) == MILLION
        assert raw.dbsize() == MILLION + 3
        yield server


@dataclass
class Served:
    """The server process under test, and an MCP client talking to it over stdio."""

    client: Client
    pid: int

    def peak_rss(self) -> int:
        """The process's high-water mark of resident memory, in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmHWM in /proc/{self.pid}/status")

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = await self.client.call_tool(name, arguments)
        assert not result.is_error, result.content
        answer: dict[str, Any] | None = result.structured_content
        assert answer is not None
        return answer


def _pid_with_marker(marker: str) -> int:
    """The process whose environment carries ``marker``: the server the SDK spawned."""
    wanted = f"MITA_REDIS_MCP_TEST_MARKER={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            return int(entry.name)
    raise AssertionError("the server process was not found in /proc")


@asynccontextmanager
async def serve(server: ServerProcess) -> AsyncIterator[Served]:
    """``python -m mita_redis_mcp`` on ``server`` with the default limits, scoped to mita:."""
    marker = uuid.uuid4().hex
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/"),
        "REDIS_URL": server.url,
        "MITA_REDIS_MCP_PREFIXES": "mita:",
        "MITA_REDIS_MCP_LOG_LEVEL": "WARNING",
        "MITA_REDIS_MCP_TEST_MARKER": marker,
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "mita_redis_mcp"], env=env)
    async with Client(params) as client:
        yield Served(client, _pid_with_marker(marker))


def _assert_small(answer: dict[str, Any]) -> None:
    size = len(json.dumps(answer))
    assert size < ANSWER_BOUND, f"the answer is {size} bytes of JSON"


def _assert_memory_bounded(served: Served, start: int) -> None:
    peak = served.peak_rss()
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / MIB:.1f} MiB"
    assert peak - start < GROWTH_BOUND, (
        f"peak RSS grew by {(peak - start) / MIB:.1f} MiB (from {start / MIB:.1f} MiB)"
    )


async def test_get_50mib_string_returns_one_window_per_call(big_redis: ServerProcess) -> None:
    with anyio.fail_after(60):
        async with serve(big_redis) as served:
            start = served.peak_rss()
            answer = await served.call("get", {"key": BIG_STRING})
            _assert_small(answer)
            assert answer["type"] == "string"
            assert answer["size"] == 50 * MIB
            assert answer["complete"] is False
            assert answer["next_cursor"]
            value = answer["value"]
            assert value["truncated"] is True
            assert value["size"] == 50 * MIB
            assert len(value["value"]) == DEFAULT_MAX_VALUE_BYTES
            assert value["value"].startswith("0123456789abcdef")

            offsets = [answer["value_offset"]]
            for _ in range(3):
                answer = await served.call(
                    "get", {"key": BIG_STRING, "cursor": answer["next_cursor"]}
                )
                _assert_small(answer)
                assert answer["complete"] is False
                offsets.append(answer["value_offset"])
            assert offsets == [i * DEFAULT_MAX_VALUE_BYTES for i in range(4)]
            _assert_memory_bounded(served, start)


async def test_get_million_field_hash_returns_one_page_per_call(
    big_redis: ServerProcess,
) -> None:
    with anyio.fail_after(60):
        async with serve(big_redis) as served:
            start = served.peak_rss()
            seen: set[str] = set()
            answer: dict[str, Any] = {"next_cursor": None}
            for _ in range(4):
                arguments = {"key": BIG_HASH, "cursor": answer["next_cursor"]}
                answer = await served.call("get", arguments)
                _assert_small(answer)
                assert answer["type"] == "hash"
                assert answer["size"] == MILLION
                assert answer["complete"] is False
                assert answer["next_cursor"]
                fields = answer["fields"]
                assert len(fields) == DEFAULT_MAX_ITEMS
                for item in fields:
                    name = item["field"]["value"]
                    assert item["value"]["value"] == "value:" + name.removeprefix("field:")
                    seen.add(name)
            # Four pages of a hash nobody writes to: SCAN repeats nothing here.
            assert len(seen) == 4 * DEFAULT_MAX_ITEMS
            _assert_memory_bounded(served, start)


async def test_get_million_member_zset_returns_one_page_per_call(
    big_redis: ServerProcess,
) -> None:
    with anyio.fail_after(60):
        async with serve(big_redis) as served:
            start = served.peak_rss()
            scores: list[float] = []
            answer: dict[str, Any] = {"next_cursor": None}
            for _ in range(4):
                arguments = {"key": BIG_ZSET, "cursor": answer["next_cursor"]}
                answer = await served.call("get", arguments)
                _assert_small(answer)
                assert answer["type"] == "zset"
                assert answer["size"] == MILLION
                assert answer["complete"] is False
                assert answer["next_cursor"]
                members = answer["members"]
                assert len(members) == DEFAULT_MAX_ITEMS
                for member in members:
                    assert float(member["member"]["value"]) == pytest.approx(member["score"])
                    scores.append(member["score"])
            # Rank order, lowest score first, continuing across pages.
            expected = [1_700_000_000 + i / 1000 for i in range(1, 4 * DEFAULT_MAX_ITEMS + 1)]
            assert scores == pytest.approx(expected)
            _assert_memory_bounded(served, start)


async def test_keys_over_a_million_keys_stays_within_the_scan_budget(
    big_redis: ServerProcess,
) -> None:
    with anyio.fail_after(60):
        async with serve(big_redis) as served:
            start = served.peak_rss()

            listed = await served.call("keys", {})
            _assert_small(listed)
            assert len(listed["keys"]) == DEFAULT_MAX_ITEMS
            assert listed["scanned"] <= DEFAULT_SCAN_BUDGET
            assert listed["complete"] is False
            assert listed["next_cursor"]

            # A pattern that matches nothing walks until the budget is spent, then stops.
            answer: dict[str, Any] = {"next_cursor": None}
            for _ in range(3):
                arguments = {"pattern": "mita:nothing:*", "cursor": answer["next_cursor"]}
                answer = await served.call("keys", arguments)
                _assert_small(answer)
                assert answer["keys"] == []
                assert 0 < answer["scanned"] <= DEFAULT_SCAN_BUDGET
                assert answer["complete"] is False
                assert answer["next_cursor"]
            _assert_memory_bounded(served, start)
