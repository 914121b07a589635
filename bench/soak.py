"""The soak, on its own: N `get` calls over stdio and over Streamable HTTP, each transport
in a fresh server process, with the memory and open file descriptors of that process
sampled as it goes and the latency of every call.

    python bench/soak.py            100,000 calls per transport
    python bench/soak.py --quick    5,000 calls per transport

It starts its own redis-server on a free loopback port and seeds a small MITA-like
keyspace; the servers are ``python -m mita_redis_mcp`` under the SDK's stdio client, and
``python -m mita_redis_mcp serve --transport http`` on a free loopback port behind a
fresh bearer token, under the SDK's Streamable HTTP client. Results:
docs/bench/results-soak*.json and a table on stdout. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
import keyspace
import run
from measure import Series
from processes import Reaper, RedisServer, bench_redis
from sessions import Server, serve_http, spawn, structured

SAMPLES = 20
TRANSPORTS = ("stdio", "http")


@dataclass(frozen=True)
class Options:
    quick: bool
    calls: int
    warmup: int
    keys: int
    transports: tuple[str, ...]
    out: Path
    name: str


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5,000 calls per transport")
    parser.add_argument("--calls", type=int, help="get calls per transport (100,000; quick 5,000)")
    parser.add_argument("--keys", type=int, default=10_000, help="keys to seed (10,000)")
    parser.add_argument(
        "--transport",
        action="append",
        choices=TRANSPORTS,
        help="soak only this transport (repeatable; default: both)",
    )
    parser.add_argument(
        "--out", type=Path, default=run.ROOT / "docs" / "bench", help="where results go"
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    calls = args.calls if args.calls is not None else (5000 if quick else 100_000)
    return Options(
        quick=quick,
        calls=calls,
        warmup=50 if quick else 200,
        keys=args.keys,
        transports=tuple(args.transport or TRANSPORTS),
        out=args.out,
        name="results-soak-quick" if quick else "results-soak",
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    with bench_redis("soak") as (server, reaper, _work, errlog):
        results = anyio.run(_soak_both, opts, server, reaper, errlog)
    opts.out.mkdir(parents=True, exist_ok=True)
    json_path = opts.out / f"{opts.name}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nresults: {run._relative(json_path)}")
    return 0


async def _soak_both(
    opts: Options, server: RedisServer, reaper: Reaper, errlog: TextIO
) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": run._meta(opts, server)}  # type: ignore[arg-type]
    run.say(f"seeding {opts.keys:,} keys on redis-server port {server.port}")
    with server.client() as client:
        seeded = keyspace.seed(
            client, server.port, opts.keys, big_string_bytes=2**20, big_hash_fields=1000
        )
    results["seed"] = asdict(seeded)
    env = {"REDIS_URL": server.url}
    transports: dict[str, Callable[[], AbstractAsyncContextManager[Server]]] = {
        "stdio": lambda: spawn(
            sys.executable,
            run.OURS,
            env,
            marker="mita_redis_mcp",
            reaper=reaper,
            errlog=errlog,
        ),
        "http": lambda: serve_http(sys.executable, run.OURS, env, reaper=reaper, errlog=errlog),
    }
    results["transports"] = {}
    for name in opts.transports:
        async with transports[name]() as ours:
            results["transports"][name] = await soak(ours, name, opts)
    run.say("done")
    results["timeline"] = run.TIMELINE
    return results


async def soak(ours: Server, transport: str, opts: Options) -> dict[str, Any]:
    """``opts.calls`` sequential `get` calls (no client validation), each timed; RSS and
    fds of the server process at the start and every 1/SAMPLES of the calls, with the
    p50/p99 of the calls since the previous sample."""
    args = {"key": keyspace.GET_KEY}
    answer = structured(await ours.raw("get", args))
    assert answer["value"]["value"] == keyspace.GET_VALUE.decode()
    at_session_start = ours.stats().as_dict()
    for _ in range(opts.warmup):
        await ours.raw("get", args)
    total = opts.calls
    step = max(1, total // SAMPLES)
    run.say(f"soak over {transport}: {total:,} get calls, sampling RSS and fds every {step:,}")
    clock = time.perf_counter_ns
    times: list[int] = []
    samples: list[dict[str, Any]] = [{"calls": 0, "seconds": 0.0, **ours.stats().as_dict()}]
    started = clock()
    for done in range(1, total + 1):
        before = clock()
        await ours.raw("get", args)
        times.append(clock() - before)
        if done % step == 0 or done == total:
            since = Series("", times[samples[-1]["calls"] :], 1.0)
            samples.append(
                {
                    "calls": done,
                    "seconds": round((clock() - started) / 1e9, 1),
                    **ours.stats().as_dict(),
                    "p50_ms": round(since.percentile(50), 3),
                    "p99_ms": round(since.percentile(99), 3),
                }
            )
    series = Series(f"get over {transport}", times, (clock() - started) / 1e9).summary()
    first, last = samples[0], samples[-1]
    return {
        "transport": transport,
        "latency": series,
        "at_session_start": at_session_start,
        "soak_start": first,
        "soak_end": last,
        "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 1),
        # Warm-up apart: growth over the last 90% of the calls.
        "rss_growth_last_90pct_mb": round(last["rss_mb"] - samples[SAMPLES // 10]["rss_mb"], 1),
        "fd_growth": last["fds"] - first["fds"],
        "max_rss_mb": max(s["rss_mb"] for s in samples),
        "max_fds": max(s["fds"] for s in samples),
        "samples": samples,
    }


def table(r: dict[str, Any]) -> str:
    meta, machine = r["meta"], r["meta"]["machine"]
    lines = [
        f"mita-redis-mcp soak, {meta['date']}",
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB, "
        f"Linux {machine['kernel']}, Python {machine['python']}",
        "load average (1/5/15 min) at start and end: "
        f"{r['timeline'][0]['load']} / {r['timeline'][-1]['load']}",
        "",
        f"{'':7} {'calls':>8} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>8}"
        f"  {'RSS MB start -> end (max)':>26}  {'fds start -> end (max)':>22}",
    ]
    for name, t in r["transports"].items():
        lat, first, last = t["latency"], t["soak_start"], t["soak_end"]
        rss = f"{first['rss_mb']:.1f} -> {last['rss_mb']:.1f} ({t['max_rss_mb']:.1f})"
        fds = f"{first['fds']} -> {last['fds']} ({t['max_fds']})"
        lines.append(
            f"{name:7} {lat['calls']:8,} {lat['calls_per_s']:8.0f} {lat['p50_ms']:7.2f} "
            f"{lat['p99_ms']:7.2f} {lat['max_ms']:8.1f}  {rss:>26}  {fds:>22}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
