"""A deterministic profile of the server's main thread (the event loop, where every
tool runs): ``python -m cProfile -o FILE -m mita_redis_mcp``, read back with pstats.

Two server processes are profiled, one answering N calls and one answering none
(start, initialize, tools/list, exit); their difference is what the N calls cost.
It counts calls exactly for plain functions (validations, socket sends); for an
``async def`` it counts every resumption after an await as a call, so anyio's
``run_sync`` at 12 per request is 3 thread hops (stdin readline, stdout write, stdout
flush: mcp.server.stdio) entered 4 times each. Its own overhead inflates the times, so
read them as shares, not as latency. Time spent waiting in epoll (idle, between
requests) is left out of the shares."""

from __future__ import annotations

import pstats
from pathlib import Path
from typing import Any

# Functions whose count per request is worth reporting, by a piece of their name.
WATCH = (
    "to_thread.py:run_sync",
    "type_adapter.py:validate_python",
    "main.py:model_dump",
    "main.py:model_validate",
    "redis/asyncio/client.py:execute_command",
    "asyncio/client.py:execute",
    "json/__init__.py:dumps",
    "json/__init__.py:loads",
    "trace.py:start_as_current_span",
)


IDLE = "<method 'poll' of 'select.epoll' objects>"


def top_entries(path: Path, baseline: Path, calls: int, top: int = 20) -> dict[str, Any]:
    """Per-request cost of each function: the profile of ``calls`` requests minus the
    profile of none."""
    after = _table(path)
    before = _table(baseline)
    rows: list[tuple[float, int, str]] = []
    for key, (ncalls, tottime) in after.items():
        base_calls, base_time = before.get(key, (0, 0.0))
        function, filename, line = key
        if ncalls - base_calls > 0 and function != IDLE:
            name = f"{function} ({_short(filename)}:{line})"
            rows.append((max(0.0, tottime - base_time), ncalls - base_calls, name))
    total = sum(r[0] for r in rows)
    rows.sort(reverse=True)
    watched: dict[str, float] = {}
    for _tt, ncalls, name in rows:
        for piece in WATCH:
            file_part, _, func = piece.partition(":")
            if name.startswith(func + " (") and file_part in name:
                watched[name] = round(ncalls / calls, 2)
    return {
        "calls": calls,
        "us_per_request": round(total / calls * 1e6, 1),
        "tottime": [
            {
                "function": name,
                "percent": round(100 * tt / total, 1),
                "us_per_request": round(tt / calls * 1e6, 1),
                "calls_per_request": round(ncalls / calls, 2),
            }
            for tt, ncalls, name in rows[:top]
        ],
        "calls_per_request": watched,
    }


def _table(path: Path) -> dict[tuple[str, str, int], tuple[int, float]]:
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    return {
        (function, filename, line): (ncalls, tottime)
        for (filename, line, function), (_cc, ncalls, tottime, _ct, _callers) in stats.items()
    }


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "lib/python3."):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return "stdlib " + rest.split("/", 1)[-1] if marker == "lib/python3." else rest
    return path
