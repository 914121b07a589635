"""The mita-redis-mcp benchmark, in one command:

    python bench/run.py            full run: 1M keys, 2000 calls per series, 100k-call soak
    python bench/run.py --quick    smoke run: 50k keys, fewer calls, smaller big values

It starts its own redis-server on a free loopback port, seeds a MITA-like keyspace,
and measures, in one run, our server over a real stdio session (the SDK's stdio client
spawning ``python -m mita_redis_mcp``) next to the floors: redis-py's own GET, a
do-nothing server on the same SDK, and a stdlib server that answers at once (the SDK
client's own cost). Results: docs/bench/results*.json, a chart
docs/bench/latency*.png (when matplotlib is installed), and a table on stdout.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any, TextIO

import anyio
import cprof
import keyspace
import pyspy
import redis
import redis.asyncio as aioredis
import report
from bare import bare_session
from mcp.client.stdio import get_default_environment
from mcp.shared.exceptions import MCPError
from measure import Series, median_ms, timed
from processes import Reaper, RedisServer, bench_redis, cpu_seconds
from sessions import Server, answer_bytes, spawn, structured
from slowlog import longest_command

from mita_redis_mcp.config import MAX_VALUE_WINDOW

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OURS = ["-m", "mita_redis_mcp"]
NOTHING = [str(BENCH / "nothing_server.py")]
INSTANT = [str(BENCH / "instant_server.py")]
SCAN_CLIENT_NAME = "bench-raw-scan"
# The phases of a run, in order (`--only` picks some; latency includes soak and profile).
PHASES = ("cold_start", "latency", "walk", "big_values")
# The domain tools, timed without client validation, each for --calls calls or
# --domain-seconds, whichever ends first. cache_hit_rate is left out: it samples INFO
# over a window of at least a second by design.
DOMAIN_CASES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("check_blacklist (jti)", "check_blacklist", {"jti": keyspace.GET_JTI}),
    ("inspect_rate_limits (exact key)", "inspect_rate_limits", {"key": keyspace.RATE_KEY}),
    ("keyspace_summary (default budget)", "keyspace_summary", {}),
    ("list_sessions", "list_sessions", {}),
    ("slowlog", "slowlog", {}),
    ("clients", "clients", {}),
    ("latency", "latency", {}),
)


def server_connections(name: bytes) -> bool:
    """The MCP server's connections: every one the benchmark did not name."""
    return not name.startswith(b"bench-")


def raw_scanner(name: bytes) -> bool:
    return name == SCAN_CLIENT_NAME.encode()


@dataclass(frozen=True)
class Options:
    quick: bool
    keys: int
    calls: int
    warmup: int
    soak_calls: int
    cold_runs: int
    uvx_online_runs: int
    big_string_mb: int
    big_hash_fields: int
    walk_budget: int
    walk_items: int
    domain_seconds: float
    summary_seconds: float
    profile: bool
    only: tuple[str, ...]
    uvx: bool
    out: Path
    name: str


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small and short")
    parser.add_argument("--keys", type=int, help="keys to seed (default 1,000,000; quick 50,000)")
    parser.add_argument("--calls", type=int, help="timed calls per series (2000; quick 300)")
    parser.add_argument("--soak-calls", type=int, help="calls before RSS/fds (100k; quick 5k)")
    parser.add_argument("--cold-runs", type=int, help="cold starts per launcher (7; quick 3)")
    parser.add_argument(
        "--uvx-online-runs",
        type=int,
        help="cold starts through uvx without --offline: uv revalidates its PyPI "
        "metadata each time, so this needs the network (3; quick 1; 0 skips)",
    )
    parser.add_argument("--big-string-mb", type=int, help="the big string (100 MB; quick 10)")
    parser.add_argument("--big-hash-fields", type=int, help="the big hash (1M; quick 100k)")
    parser.add_argument("--walk-budget", type=int, default=100_000, help="SCAN budget per call")
    parser.add_argument("--walk-items", type=int, default=10_000, help="max items per call")
    parser.add_argument(
        "--domain-seconds", type=float, help="time cap per domain-tool series (20; quick 5)"
    )
    parser.add_argument(
        "--summary-seconds",
        type=float,
        help="time cap of the keyspace_summary walk (300; quick 60)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument(
        "--only",
        help=f"comma-separated phases to run ({','.join(PHASES)}); the others are left "
        "out of the table and the results go to <name>-only.json",
    )
    parser.add_argument("--no-uvx", action="store_true", help="skip the uvx cold start")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "bench", help="where results go"
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    return Options(
        quick=quick,
        keys=pick(args.keys, 1_000_000, 50_000),
        calls=pick(args.calls, 2000, 300),
        warmup=50 if quick else 200,
        soak_calls=pick(args.soak_calls, 100_000, 5000),
        cold_runs=pick(args.cold_runs, 7, 3),
        uvx_online_runs=pick(args.uvx_online_runs, 3, 1),
        big_string_mb=pick(args.big_string_mb, 100, 10),
        big_hash_fields=pick(args.big_hash_fields, 1_000_000, 100_000),
        walk_budget=args.walk_budget,
        walk_items=args.walk_items,
        domain_seconds=args.domain_seconds or (5.0 if quick else 20.0),
        summary_seconds=args.summary_seconds or (60.0 if quick else 300.0),
        profile=not args.no_profile,
        only=tuple(args.only.split(",")) if args.only else PHASES,
        uvx=not args.no_uvx,
        out=args.out,
        name=("results-quick" if quick else "results") + ("-only" if args.only else ""),
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    with bench_redis("run") as (server, reaper, work, errlog):
        results = anyio.run(_bench, opts, server, reaper, work, errlog)
    opts.out.mkdir(parents=True, exist_ok=True)
    json_path = opts.out / f"{opts.name}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(report.table(results))
    print(
        f"\nresults: {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}"
    )
    chart = opts.out / ("latency-quick.png" if opts.quick else "latency.png")
    message = (
        report.chart(results, chart) if opts.only == PHASES else "chart skipped: not a full run"
    )
    print(message)
    return 0


# What the benchmark was doing when, with the machine's load average: other work on
# a 2-core machine shows in the numbers, and this shows when there was any.
TIMELINE: list[dict[str, str]] = []


def say(text: str) -> None:
    now = time.strftime("%H:%M:%S")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    TIMELINE.append({"time": now, "load": load, "phase": text})
    print(f"[{now}] (load {load}) {text}", file=sys.stderr, flush=True)


async def _bench(
    opts: Options, server: RedisServer, reaper: Reaper, work: Path, errlog: TextIO
) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": _meta(opts, server)}
    say(f"seeding {opts.keys:,} keys on redis-server port {server.port}")
    with server.client() as client:
        seeded = keyspace.seed(
            client,
            server.port,
            opts.keys,
            big_string_bytes=opts.big_string_mb * 2**20,
            big_hash_fields=opts.big_hash_fields,
        )
    results["seed"] = asdict(seeded)
    say(f"seeded {seeded.keys:,} keys in {seeded.seconds} s ({seeded.used_memory_mb} MB)")
    env = {"REDIS_URL": server.url}
    ctx = Context(opts, server, reaper, work, errlog, env)
    phases = {
        "cold_start": ctx.cold_start,
        "latency": lambda: ctx.latency(results),
        "walk": ctx.walks,
        "big_values": ctx.big_values,
    }
    for phase, run in phases.items():
        if phase in opts.only:
            results[phase] = await run()
    say("done")
    results["timeline"] = TIMELINE
    return results


@dataclass
class Context:
    opts: Options
    redis: RedisServer
    reaper: Reaper
    work: Path
    errlog: TextIO
    env: dict[str, str]

    def ours(self, extra: dict[str, str] | None = None) -> Any:
        return spawn(
            sys.executable,
            OURS,
            self.env | (extra or {}),
            marker="mita_redis_mcp",
            reaper=self.reaper,
            errlog=self.errlog,
        )

    def nothing(self, *flags: str) -> Any:
        return spawn(
            sys.executable,
            [*NOTHING, *flags],
            {},
            marker="nothing_server.py",
            reaper=self.reaper,
            errlog=self.errlog,
        )

    def instant(self) -> Any:
        return spawn(
            sys.executable,
            INSTANT,
            {},
            marker="instant_server.py",
            reaper=self.reaper,
            errlog=self.errlog,
        )

    # -- latency, validation, soak, profile ------------------------------------------

    async def latency(self, results: dict[str, Any]) -> dict[str, Any]:
        n, warm = self.opts.calls, self.opts.warmup
        # Each MCP series also reports the server process's CPU per call (its utime +
        # stime before and after the timed calls). /proc counts in 10 ms ticks: over
        # 2000 calls that is 5 us per call, fine; a --quick run's 300 calls give 33 us.
        series: list[Series] = []
        sizes: dict[str, int] = {}
        say(f"latency: {n} sequential calls per series")
        async with aioredis.Redis(
            host="127.0.0.1", port=self.redis.port, client_name="bench-redis-py"
        ) as client:
            key = keyspace.GET_KEY
            series.append(await timed("redis-py GET", lambda: client.get(key), n, warmup=warm))

            get_commands = (
                ("TYPE", key),
                ("PTTL", key),
                ("OBJECT", "ENCODING", key),
                ("STRLEN", key),
                ("GETRANGE", key, 0, 16383),
            )

            async def same_round_trips() -> None:
                pipe = client.pipeline(transaction=False)
                for command in get_commands:
                    pipe.execute_command(*command)
                await pipe.execute()

            series.append(
                await timed(
                    "redis-py, get's round trip (5 pipelined)", same_round_trips, n, warmup=warm
                )
            )

        async def on(server: Server, label: str, call: Any, **options: Any) -> None:
            """A timed series of calls to ``server``, with its CPU per call."""
            options.setdefault("warmup", warm)
            series.append(
                await timed(label, call, n, server_cpu=partial(cpu_seconds, server.pid), **options)
            )

        async def validation(label: str, server: Server, tool: str, result: Any) -> None:
            """The client's own cost: validating one answer against the output schema."""
            series.append(
                await timed(label, partial(server.validate, tool, result), n, warmup=warm)
            )

        args = {"key": keyspace.GET_KEY}
        async with self.nothing() as nothing:
            first = await nothing.call("nothing", args)
            assert structured(first)["value"] == "blacklisted"
            sizes["nothing"] = answer_bytes(first)
            await on(nothing, "SDK do-nothing tool", partial(nothing.call, "nothing", args))
            await on(
                nothing,
                "SDK do-nothing tool, no client validation",
                partial(nothing.raw, "nothing", args),
            )
            await validation(
                "client validation of the do-nothing answer", nothing, "nothing", first
            )

        async with self.nothing("--our-stdio") as nothing:
            await on(
                nothing,
                "SDK do-nothing tool on our stdio transport, no client validation",
                partial(nothing.raw, "nothing", args),
            )

        async with self.instant() as instant:
            first = await instant.raw("instant", args)
            assert structured(first)["value"] == "blacklisted"
            sizes["instant"] = answer_bytes(first)
            await on(
                instant,
                "SDK client, instant server (the client's floor)",
                partial(instant.raw, "instant", args),
            )

        async with self.ours() as ours:
            at_start = ours.stats()
            got = await ours.call("get", args)
            assert structured(got)["value"]["value"] == keyspace.GET_VALUE.decode()
            sizes["get"] = answer_bytes(got)
            keys_args = {"pattern": keyspace.KEYS_PAGE}
            page = await ours.call("keys", keys_args)
            assert len(structured(page)["keys"]) == 100
            sizes["keys"] = answer_bytes(page)
            for label, tool, tool_args, result in (
                ("get", "get", args, got),
                ("keys, first page (100 keys)", "keys", keys_args, page),
            ):
                await on(ours, f"mita-redis-mcp {label}", partial(ours.call, tool, tool_args))
                await on(
                    ours,
                    f"mita-redis-mcp {label}, no client validation",
                    partial(ours.raw, tool, tool_args),
                )
                await validation(f"client validation of the {tool} answer", ours, tool, result)
            skipped: dict[str, str] = {}
            for label, tool, tool_args in DOMAIN_CASES:
                try:
                    first_answer = await ours.raw(tool, tool_args)
                    structured(first_answer)
                except (RuntimeError, MCPError) as exc:
                    skipped[label] = str(exc)[:300]
                    say(f"domain tool {label} skipped: {skipped[label]}")
                    continue
                sizes[tool] = answer_bytes(first_answer)
                await on(
                    ours,
                    f"mita-redis-mcp {label}, no client validation",
                    partial(ours.raw, tool, tool_args),
                    warmup=min(warm, 20),
                    seconds=self.opts.domain_seconds,
                )
            after_series = ours.stats()
            results["profile"] = await self.profile(ours)
            results["soak"] = await self.soak(ours, at_start.as_dict(), after_series.as_dict())

        series += await self.bare_series()
        # The floor again, last: a machine's speed drifts over minutes (CPU frequency, a
        # neighbour on the host), and one reading of a 0.1 ms call can be off by 2x.
        # The ratios divide by the faster of the two readings: the conservative floor.
        async with aioredis.Redis(
            host="127.0.0.1", port=self.redis.port, client_name="bench-redis-py"
        ) as client:
            series.append(
                await timed(
                    "redis-py GET, again after every other series",
                    partial(client.get, keyspace.GET_KEY),
                    n,
                    warmup=warm,
                )
            )
        summaries = {s.label: s.summary() for s in series}
        floor = min(
            summaries["redis-py GET"]["p50_ms"],
            summaries["redis-py GET, again after every other series"]["p50_ms"],
        )
        for summary in summaries.values():
            summary["x_redis_py_get"] = round(summary["p50_ms"] / floor, 1)
        return {
            "series": summaries,
            "answer_bytes": sizes,
            "order": [s.label for s in series],
            "skipped": skipped,
        }

    async def bare_series(self) -> list[Series]:
        """The instant server, the SDK's do-nothing tool on our stdio transport and our
        `get`, each called by a bare JSON-RPC client (bare.py): the servers' own cost,
        without the SDK client's."""
        n, warm = self.opts.calls, self.opts.warmup
        args = {"key": keyspace.GET_KEY}
        out: list[Series] = []
        for label, command, env, tool in (
            ("instant server", INSTANT, {}, "instant"),
            (
                "SDK do-nothing tool on our stdio transport",
                [*NOTHING, "--our-stdio"],
                {},
                "nothing",
            ),
            ("mita-redis-mcp get", OURS, self.env, "get"),
        ):
            async with bare_session(sys.executable, command, env, reaper=self.reaper) as bare:
                await bare.call(tool, args)
                out.append(
                    await timed(
                        f"{label}, bare JSON-RPC client",
                        partial(bare.call, tool, args),
                        n,
                        warmup=warm,
                        server_cpu=partial(cpu_seconds, bare.pid),
                    )
                )
        return out

    async def profile(self, ours: Server) -> dict[str, Any]:
        if not self.opts.profile:
            return {"skipped": "--no-profile"}
        calls = self.opts.calls
        args = {"key": keyspace.GET_KEY}
        out: dict[str, Any] = {"calls": calls, "tool": "get"}
        if pyspy.binary() is None:
            message = "py-spy is not installed (pip install py-spy): no sampling profile"
            say(message)
            out["py_spy"] = {"skipped": message}
        else:
            raw = self.work / "py-spy.txt"
            say(f"profile: py-spy (--gil) on the server during {calls} get calls")
            try:
                with pyspy.recording(ours.pid, raw, self.reaper):
                    for _ in range(calls):
                        await ours.raw("get", args)
                out["py_spy"] = (
                    pyspy.top_entries(raw)
                    if raw.is_file()
                    else {"skipped": "py-spy wrote no output"}
                )
            except (RuntimeError, OSError) as exc:
                say(f"py-spy profile skipped: {exc}")
                out["py_spy"] = {"skipped": str(exc)}
        say(f"profile: cProfile of two server processes, {calls} get calls and none")
        stats = {n: self.work / f"server-{n}.prof" for n in (0, calls)}
        for n, path in stats.items():
            async with spawn(
                sys.executable,
                ["-m", "cProfile", "-o", str(path), *OURS],
                self.env,
                marker="mita_redis_mcp",
                reaper=self.reaper,
                errlog=self.errlog,
            ) as profiled:
                for _ in range(n):
                    await profiled.raw("get", args)
        # Each server writes its profile when it exits, after its stdin closes.
        out["cprofile"] = (
            cprof.top_entries(stats[calls], stats[0], calls)
            if all(p.is_file() for p in stats.values())
            else {"skipped": "a profiled server wrote no stats (killed before exiting?)"}
        )
        return out

    async def soak(
        self, ours: Server, at_start: dict[str, float], after_series: dict[str, float]
    ) -> dict[str, Any]:
        total = self.opts.soak_calls
        say(f"soak: {total:,} get calls (no client validation), sampling RSS and fds")
        args = {"key": keyspace.GET_KEY}
        step = max(1, total // 20)
        samples = [{"calls": 0, **ours.stats().as_dict()}]
        started = time.perf_counter()
        for done in range(1, total + 1):
            await ours.raw("get", args)
            if done % step == 0 or done == total:
                samples.append({"calls": done, **ours.stats().as_dict()})
        seconds = time.perf_counter() - started
        first, last = samples[0], samples[-1]
        return {
            "calls": total,
            "seconds": round(seconds, 1),
            "calls_per_s": round(total / seconds, 1),
            "at_session_start": at_start,
            "after_latency_series": after_series,
            "soak_start": first,
            "soak_end": last,
            "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 1),
            "fd_growth": last["fds"] - first["fds"],
            "samples": samples,
        }

    # -- the namespace walk ------------------------------------------------------------

    async def walks(self) -> dict[str, Any]:
        opts = self.opts
        extra = {
            "MITA_REDIS_MCP_SCAN_BUDGET": str(opts.walk_budget),
            "MITA_REDIS_MCP_MAX_ITEMS": str(opts.walk_items),
        }
        out: dict[str, Any] = {"budget": opts.walk_budget, "max_items": opts.walk_items}
        with self.redis.client() as client:
            dbsize = int(client.dbsize())
        out["dbsize"] = dbsize
        max_len = 2 * dbsize + 100_000
        async with (
            self.ours(extra) as ours,
            aioredis.Redis(
                host="127.0.0.1", port=self.redis.port, client_name=SCAN_CLIENT_NAME
            ) as scanner,
        ):
            await scanner.ping()
            for name, pattern in (("dense", keyspace.WALK_DENSE), ("sparse", keyspace.WALK_SPARSE)):
                say(f"walk ({name}): keyspace_summary {pattern!r} following next_cursor")
                summary = await self._summary_walk(ours, dbsize, pattern, max_len=max_len)
                say(f"walk ({name}): raw redis-py SCAN MATCH {pattern!r} COUNT 1000")
                raw_walk = await self._raw_walk(scanner, pattern, dbsize, max_len)
                say(f"walk ({name}): keys {pattern!r} following next_cursor over {dbsize:,} keys")
                ours_walk = await self._mcp_walk(ours, pattern, dbsize, max_len)
                raw_rate = raw_walk["examined_per_s"]
                out[name] = {
                    "pattern": pattern,
                    "keyspace_summary": summary,
                    "summary_examined_per_s_vs_raw": round(summary["examined_per_s"] / raw_rate, 3),
                    "mita_redis_mcp": ours_walk,
                    "raw_scan": raw_walk,
                    "examined_per_s_vs_raw": round(ours_walk["examined_per_s"] / raw_rate, 3),
                }
            say("walk: keyspace_summary of every prefix following next_cursor")
            every = await self._summary_walk(ours, dbsize, "*", max_len=1_000_000, threshold_us=100)
            for name in ("dense", "sparse"):
                raw_rate = out[name]["raw_scan"]["examined_per_s"]
                every[f"vs_raw_{name}"] = round(every["examined_per_s"] / raw_rate, 3)
            out["keyspace_summary"] = every
            out["server_after"] = ours.stats().as_dict()
        return out

    async def _mcp_walk(
        self, ours: Server, pattern: str, dbsize: int, max_len: int
    ) -> dict[str, Any]:
        calls = returned = scanned = spent = size = 0
        slowest_call = 0.0
        cursor: str | None = None
        bound = dbsize // 1000 + 1000
        with (
            self.redis.client() as client,
            longest_command(client, server_connections, max_len) as longest,
        ):
            started = time.perf_counter()
            while calls < bound:
                args: dict[str, Any] = {"pattern": pattern, "limit": self.opts.walk_items}
                if cursor is not None:
                    args["cursor"] = cursor
                before = time.perf_counter()
                result = await ours.raw("keys", args)
                slowest_call = max(slowest_call, time.perf_counter() - before)
                answer = structured(result)
                calls += 1
                returned += len(answer["keys"])
                scanned += int(answer["scanned"])
                spent += int(answer["commands"])
                size += answer_bytes(result)
                if answer["complete"]:
                    break
                cursor = answer["next_cursor"]
            else:
                raise RuntimeError(f"the walk of {pattern!r} did not end within {bound} calls")
            seconds = time.perf_counter() - started
        return {
            "seconds": round(seconds, 2),
            "calls": calls,
            "keys_returned": returned,
            "scanned_hint_sum": scanned,
            "redis_commands": spent,
            "answer_bytes": size,
            "slowest_call_ms": round(slowest_call * 1000, 1),
            "examined_per_s": round(dbsize / seconds),
            "returned_per_s": round(returned / seconds),
            "longest_redis_command_us": longest["max_us"],
            "longest_redis_command": longest["command"],
            "longest_redis_commands": longest["top_us"],
            "redis_command_p999_us": longest["p999_us"],
            "slowlog_overflowed": longest["overflowed"],
            "commands_by_name": longest["commands"],
        }

    async def _summary_walk(
        self,
        ours: Server,
        dbsize: int,
        pattern: str,
        *,
        max_len: int,
        threshold_us: int = 0,
    ) -> dict[str, Any]:
        """keyspace_summary of ``pattern`` to the end (or to --summary-seconds), budget
        200,000 per call. A pattern inside one prefix is one SCAN walk of the table,
        like the raw walk (keys examined: DBSIZE); '*' walks the table once per allowed
        prefix (keys examined: the sum of `scanned`). For '*', which sends millions of
        commands, SLOWLOG logs only those of ``threshold_us`` or more."""
        calls = scanned = counted = sampled = spent = 0
        slowest_call = 0.0
        complete = False
        cursor: str | None = None
        bound = 100 * max(1, dbsize // 10_000) + 100
        with (
            self.redis.client() as client,
            longest_command(client, server_connections, max_len, threshold_us) as longest,
        ):
            started = time.perf_counter()
            while calls < bound and time.perf_counter() - started < self.opts.summary_seconds:
                args: dict[str, Any] = {"pattern": pattern, "budget": 200_000}
                if cursor is not None:
                    args["cursor"] = cursor
                before = time.perf_counter()
                answer = structured(await ours.raw("keyspace_summary", args))
                slowest_call = max(slowest_call, time.perf_counter() - before)
                calls += 1
                scanned += int(answer["scanned"])
                counted += int(answer["keys_examined"])
                sampled += int(answer["keys_sampled"])
                spent += int(answer.get("commands", 0))
                if answer["complete"]:
                    complete = True
                    break
                cursor = answer["next_cursor"]
            seconds = time.perf_counter() - started
        examined = scanned if pattern == "*" else dbsize
        return {
            "pattern": pattern,
            "seconds": round(seconds, 2),
            "calls": calls,
            "complete": complete,
            "scanned_hint_sum": scanned,
            "keys_examined": examined,
            "keys_counted": counted,
            "keys_sampled": sampled,
            "redis_commands": spent,
            "slowest_call_ms": round(slowest_call * 1000, 1),
            "examined_per_s": round(examined / seconds),
            "longest_redis_command_us": longest["max_us"],
            "longest_redis_command": longest["command"],
            "longest_redis_commands": longest["top_us"],
            "redis_command_p999_us": longest["p999_us"],
            "slowlog_threshold_us": threshold_us,
            "commands_by_name": longest["commands"],
        }

    async def _raw_walk(
        self, scanner: aioredis.Redis, pattern: str, dbsize: int, max_len: int
    ) -> dict[str, Any]:
        calls = matched = 0
        cursor = 0
        bound = 4 * (dbsize // 1000) + 1000
        with (
            self.redis.client() as client,
            longest_command(client, raw_scanner, max_len) as longest,
        ):
            started = time.perf_counter()
            while calls < bound:
                cursor, found = await scanner.scan(cursor, match=pattern, count=1000)
                calls += 1
                matched += len(found)
                if cursor == 0:
                    break
            else:
                raise RuntimeError(f"the SCAN of {pattern!r} did not end within {bound} calls")
            seconds = time.perf_counter() - started
        return {
            "seconds": round(seconds, 2),
            "calls": calls,
            "keys_matched": matched,
            "examined_per_s": round(dbsize / seconds),
            "longest_redis_command_us": longest["max_us"],
            "longest_redis_command": longest["command"],
            "longest_redis_commands": longest["top_us"],
            "redis_command_p999_us": longest["p999_us"],
            "slowlog_overflowed": longest["overflowed"],
        }

    # -- big values ------------------------------------------------------------------

    async def big_values(self) -> list[dict[str, Any]]:
        largest = {
            "MITA_REDIS_MCP_MAX_VALUE_BYTES": str(MAX_VALUE_WINDOW),
            "MITA_REDIS_MCP_MAX_ITEMS": "10000",
        }
        cases: list[tuple[str, dict[str, str], str, dict[str, Any]]] = [
            ("defaults", {}, "string", {"key": keyspace.BIG_STRING}),
            ("defaults", {}, "hash", {"key": keyspace.BIG_HASH}),
            ("largest limits", largest, "string", {"key": keyspace.BIG_STRING}),
            ("largest limits", largest, "hash", {"key": keyspace.BIG_HASH, "count": 10_000}),
        ]
        sizes = {
            "string": f"{self.opts.big_string_mb} MB string",
            "hash": f"{self.opts.big_hash_fields:,}-field hash",
        }
        out: list[dict[str, Any]] = []
        for config, extra, kind, args in cases:
            say(f"big values: get of the {sizes[kind]} ({config}), fresh server")
            async with self.ours(extra) as ours:
                at_start = ours.stats()
                times: list[float] = []
                size = 0
                with (
                    self.redis.client() as client,
                    longest_command(client, server_connections, 10_000) as longest,
                ):
                    for _ in range(3):
                        before = time.perf_counter()
                        result = await ours.raw("get", args)
                        times.append(time.perf_counter() - before)
                        answer = structured(result)
                        size = answer_bytes(result)
                after = ours.stats()
            out.append(
                {
                    "value": sizes[kind],
                    "config": config,
                    "arguments": {k: v for k, v in args.items() if k != "key"},
                    "first_ms": round(times[0] * 1000, 1),
                    "median_ms": round(statistics.median(times) * 1000, 1),
                    "answer_bytes": size,
                    "complete": answer["complete"],
                    "rss_at_start_mb": at_start.as_dict()["rss_mb"],
                    "peak_rss_mb": after.as_dict()["peak_rss_mb"],
                    "longest_redis_command_us": longest["max_us"],
                    "longest_redis_command": longest["command"],
                    "longest_redis_commands": longest["top_us"],
                }
            )
        return out

    # -- cold start --------------------------------------------------------------------

    async def cold_start(self) -> dict[str, Any]:
        runs = self.opts.cold_runs
        out: dict[str, Any] = {}
        say(f"cold start: spawn to tools/list answered, {runs} runs per launcher")
        out["python -c pass"] = median_ms(_startups([sys.executable, "-c", "pass"], runs))
        ours: list[float] = []
        nothing: list[float] = []
        # One untimed start each first, so that every timed start finds .pyc files.
        async with self.ours(), self.nothing():
            pass
        for _ in range(runs):
            async with self.ours() as server:
                ours.append(server.ready_seconds)
            async with self.nothing() as server:
                nothing.append(server.ready_seconds)
        out["python -m mita_redis_mcp"] = median_ms(ours)
        out["SDK do-nothing server"] = median_ms(nothing)
        out["uvx"] = await self._uvx_cold(runs)
        out["imports"] = _import_times()
        return out

    async def _uvx_cold(self, runs: int) -> dict[str, Any]:
        if not self.opts.uvx:
            return {"skipped": "--no-uvx"}
        uv = _tool("uv")
        uvx = _tool("uvx")
        if uv is None or uvx is None:
            message = "uv/uvx not found: the uvx cold start is skipped (pip install uv)"
            say(message)
            return {"skipped": message}
        dist = self.work / "dist"
        with anyio.fail_after(600):
            build = await anyio.run_process(
                [uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT)], check=False
            )
        wheels = sorted(dist.glob("*.whl"))
        if build.returncode != 0 or not wheels:
            error = build.stderr.decode(errors="replace").strip()[-300:]
            message = f"uv build failed, uvx cold start skipped: {error}"
            say(message)
            return {"skipped": message}
        wheel = str(wheels[0])
        # What uv needs to reach its index: its own settings, proxies, CA bundles.
        uv_env = {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("UV_", "SSL_CERT_")) or k.lower().endswith("_proxy")
        }
        # Every uvx here passes --compile-bytecode, as the project's .mcp.json does: uv
        # compiles the environment once when it installs it, so a start does not depend
        # on PYTHONDONTWRITEBYTECODE or on a writable cache to find .pyc files.
        # The first run installs the wheel's dependencies into uv's cache: not timed.
        with anyio.fail_after(600):
            warm = await anyio.run_process(
                [uvx, "--compile-bytecode", "--from", wheel, "mita-redis-mcp", "--version"],
                check=False,
            )
        if warm.returncode != 0:
            error = warm.stderr.decode(errors="replace").strip()[-300:]
            message = f"uvx could not install the wheel (offline?): {error}"
            say(message)
            return {"skipped": message}
        out: dict[str, Any] = {"wheel": Path(wheel).name}

        async def start(flags: list[str]) -> float:
            async with spawn(
                uvx,
                [*flags, "--from", wheel, "mita-redis-mcp"],
                self.env | uv_env,
                marker=wheel,  # uvx execs `uv tool uvx ...`: the wheel path stays
                reaper=self.reaper,
                errlog=self.errlog,
            ) as server:
                return server.ready_seconds

        offline = ["--offline", "--compile-bytecode"]
        # By default uvx looks for a Python on each start (with pyenv, it runs the shim it
        # finds on PATH); pinned, it takes the one given.
        pinned = [*offline, "--python", _base_python()]
        # Untimed first starts: the pinned interpreter may differ from the one found.
        for flags in (offline, pinned):
            await start(flags)
        for label, flags, count in (
            ("uvx --offline --compile-bytecode --from wheel", offline, runs),
            ("uvx --offline --compile-bytecode --from wheel, --python pinned", pinned, runs),
            (
                "uvx --compile-bytecode --from wheel",
                ["--compile-bytecode"],
                self.opts.uvx_online_runs,
            ),
        ):
            try:
                times = [await start(flags) for _ in range(count)]
            except Exception as exc:  # optional part: report and go on
                self.errlog.flush()
                message = f"{label} failed ({_leaf(exc)}); server stderr: {_tail(self.errlog)}"
                say(message)
                out[f"{label} (skipped)"] = message
                continue
            if times:
                out[label] = median_ms(times)
        # uv's own start: the same uvx running the environment's python with nothing to
        # do, in the environment the SDK's stdio client gives the servers above.
        env = get_default_environment() | self.env | uv_env
        for label, flags in (
            ("uvx --offline --compile-bytecode --from wheel python -c pass", offline),
            (
                "uvx --offline --compile-bytecode --from wheel python -c pass, --python pinned",
                pinned,
            ),
        ):
            command = [uvx, *flags, "--from", wheel, "python", "-c", "pass"]
            try:
                out[label] = median_ms(_startups(command, runs, env))
            except (subprocess.SubprocessError, OSError) as exc:  # optional: report, go on
                message = f"{label} failed ({_leaf(exc)})"
                say(message)
                out[f"{label} (skipped)"] = message
        return out


def _tail(log: TextIO) -> str:
    lines = Path(log.name).read_text(errors="replace").splitlines()[-40:]
    return " | ".join(line for line in lines if " INFO " not in line)[-400:]


def _leaf(exc: BaseException) -> str:
    """The first real error inside nested exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _base_python() -> str:
    """The system interpreter this one comes from: uv refuses a virtualenv's python
    for a tool, so --python is pinned to this one."""
    base = getattr(sys, "_base_executable", sys.executable)  # not in typeshed's sys
    return os.path.realpath(str(base))


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name)


def _startups(command: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    """Seconds from start to exit of ``command``, ``runs`` times."""
    times: list[float] = []
    for _ in range(runs):
        before = time.perf_counter()
        subprocess.run(command, check=True, timeout=60, env=env)
        times.append(time.perf_counter() - before)
    return times


def _import_times(top: int = 12) -> dict[str, Any]:
    """Where the import time of the server's modules goes (python -X importtime)."""
    probe = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "import mita_redis_mcp.cli, mita_redis_mcp.app, mita_redis_mcp.server",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows: list[tuple[int, str]] = []
    pattern = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")
    for line in probe.stderr.splitlines():
        match = pattern.match(line)
        if match and len(match[3]) == 1:  # top-level imports only
            rows.append((int(match[2]), match[4]))
    rows.sort(reverse=True)
    return {
        "total_ms": round(sum(us for us, _ in rows) / 1000, 1),
        "top": [{"module": name, "cumulative_ms": round(us / 1000, 1)} for us, name in rows[:top]],
    }


def _meta(opts: Options, server: RedisServer) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "memory_gb": round(memory_kb / 2**20, 1),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "versions": {
            "redis-server": server.version(),
            "mita-redis-mcp": version("mita-redis-mcp"),
            "mcp": version("mcp"),
            "redis-py": redis.__version__,
            "pydantic": version("pydantic"),
        },
        # Paths relative to the checkout: results never name this machine's directories.
        "options": {k: _relative(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
    }


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


if __name__ == "__main__":
    raise SystemExit(main())
