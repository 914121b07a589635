"""The namespace walk and keyspace_summary on a Redis Cluster, against raw SCAN.

    python bench/cluster.py              # 3 primaries, 3,000,000 keys (~5 min)
    python bench/cluster.py --keys 100000

Starts a cluster of 3 primaries (redis-server processes on free loopback ports, no
replicas: the walk reads primaries only), seeds the MITA-like keyspace of
``keyspace.py`` over one raw socket per primary (each command sent to the primary of
its key's slot; MSET split by slot), then measures, in keys examined per second (DBSIZE
summed over the primaries / wall time):

- ``keys`` following next_cursor to the end over a real stdio session (scan budget
  100,000 and 10,000 items per call, as bench/run.py): its cursor walks every primary;
- ``keyspace_summary`` to the end (or ``--summary-seconds``), budget 200,000 per call:
  it walks every primary once per allowed prefix, so its examined keys are the sum of
  its ``scanned``;
- redis-py SCAN MATCH ... COUNT 1000 on each primary in turn: the floor.

and the MCP server's peak RSS (VmHWM). Results go to docs/bench/cluster.json. Every
process started is stopped by pid at the end, also on errors.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio
import keyspace
import redis.asyncio as aioredis
from processes import Reaper, RedisServer, free_port, start_redis
from redis.crc import key_slot
from resp import RawPipe
from sessions import Server, spawn, structured

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "bench" / "cluster.json"
OURS = ["-m", "mita_redis_mcp"]
# Commands the seeding sends with more than one key, and where the keys are.
_PAIRS = "MSET"
_ALL_KEYS = "DEL"


@dataclass
class Primaries:
    """The cluster's primaries, answering what seeding asks of one server (summed)."""

    nodes: list[RedisServer] = field(default_factory=list)

    def flushdb(self) -> None:
        for node in self.nodes:
            with node.client() as client:
                client.flushdb()

    def info(self, section: str) -> dict[str, int]:
        used = 0
        for node in self.nodes:
            with node.client() as client:
                used += int(client.info(section)["used_memory"])
        return {"used_memory": used}

    def dbsize(self) -> int:
        total = 0
        for node in self.nodes:
            with node.client() as client:
                total += int(client.dbsize())
        return total

    def slot_owners(self) -> list[int]:
        """The port of the primary owning each of the 16384 slots."""
        owners = [0] * 16384
        with self.nodes[0].client() as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                owners[start : end + 1] = [int(primary[1])] * (end - start + 1)
        return owners

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SlotPipe(RawPipe):
    """RawPipe's interface over one raw socket per primary: each command goes to the
    primary of its key's slot."""

    def __init__(self, owners: list[int], ports: list[int]) -> None:
        self._owners = owners
        self._pipes = {port: RawPipe(port) for port in ports}

    def __enter__(self) -> SlotPipe:
        return self

    def __exit__(self, *_exc: object) -> None:
        for pipe in self._pipes.values():
            pipe.__exit__()

    def add(self, *args: bytes | str | int | float) -> None:
        name = str(args[0]).upper()
        if name == _PAIRS:
            by_slot: dict[int, list[bytes | str | int | float]] = {}
            for i in range(1, len(args), 2):
                by_slot.setdefault(_slot(args[i]), []).extend(args[i : i + 2])
            for slot, pairs in by_slot.items():
                self._pipes[self._owners[slot]].add(name, *pairs)
        elif name == _ALL_KEYS:
            for key in args[1:]:
                self._pipes[self._owners[_slot(key)]].add(name, key)
        else:
            self._pipes[self._owners[_slot(args[1])]].add(*args)

    def flush(self) -> None:
        for pipe in self._pipes.values():
            pipe.flush()


def _slot(key: bytes | str | int | float) -> int:
    return int(key_slot(key if isinstance(key, bytes) else str(key).encode()))


def free_cluster_port() -> int:
    """A free port P whose cluster bus port P + 10000 is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def start_cluster(reaper: Reaper, primaries: int) -> Primaries:
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise SystemExit(
            "redis-server and redis-cli must be on PATH (apt-get install redis-server)"
        )
    cluster = Primaries()
    for _ in range(primaries):
        port = free_cluster_port()
        config = ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf")
        cluster.nodes.append(start_redis(reaper, binary, port=port, extra=config))
    create = [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in cluster.nodes)]
    subprocess.run(
        [*create, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=120,
    )
    _wait(lambda: all(_cluster_ok(n) for n in cluster.nodes), "cluster_state:ok")
    return cluster


def _cluster_ok(node: RedisServer) -> bool:
    with node.client() as client:
        return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")


def _wait(ready: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:g} s")
        time.sleep(0.05)


async def walk_keys(ours: Server, pattern: str, dbsize: int, items: int) -> dict[str, Any]:
    calls = returned = scanned = spent = 0
    cursor: str | None = None
    started = time.perf_counter()
    while True:
        args: dict[str, Any] = {"pattern": pattern, "limit": items}
        if cursor is not None:
            args["cursor"] = cursor
        answer = structured(await ours.raw("keys", args))
        calls += 1
        returned += len(answer["keys"])
        scanned += int(answer["scanned"])
        spent += int(answer["commands"])
        if answer["complete"]:
            break
        cursor = answer["next_cursor"]
    seconds = time.perf_counter() - started
    return {
        "pattern": pattern,
        "seconds": round(seconds, 2),
        "calls": calls,
        "keys_returned": returned,
        "scanned_hint_sum": scanned,
        "redis_commands": spent,
        "examined_per_s": round(dbsize / seconds),
    }


async def walk_summary(ours: Server, cap_seconds: float) -> dict[str, Any]:
    calls = scanned = classified = 0
    complete = False
    cursor: str | None = None
    started = time.perf_counter()
    while time.perf_counter() - started < cap_seconds:
        args: dict[str, Any] = {"budget": 200_000}
        if cursor is not None:
            args["cursor"] = cursor
        answer = structured(await ours.raw("keyspace_summary", args))
        calls += 1
        scanned += int(answer["scanned"])
        classified += int(answer["keys_examined"])
        if answer["complete"]:
            complete = True
            break
        cursor = answer["next_cursor"]
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "calls": calls,
        "complete": complete,
        "scanned_hint_sum": scanned,
        "keys_classified": classified,
        "examined_per_s": round(scanned / seconds),
    }


async def raw_scan(cluster: Primaries, pattern: str, dbsize: int) -> dict[str, Any]:
    """SCAN MATCH pattern COUNT 1000 to the end on each primary in turn, redis-py asyncio."""
    calls = matched = 0
    started = time.perf_counter()
    for node in cluster.nodes:
        async with aioredis.Redis(host="127.0.0.1", port=node.port) as client:
            cursor = 0
            while True:
                cursor, found = await client.scan(cursor, match=pattern, count=1000)
                calls += 1
                matched += len(found)
                if cursor == 0:
                    break
    seconds = time.perf_counter() - started
    return {
        "pattern": pattern,
        "seconds": round(seconds, 2),
        "calls": calls,
        "keys_matched": matched,
        "examined_per_s": round(dbsize / seconds),
    }


@dataclass
class Options:
    keys: int
    primaries: int
    summary_seconds: float
    output: Path


async def measure(
    cluster: Primaries, opts: Options, reaper: Reaper, errlog: TextIO
) -> dict[str, Any]:
    dbsize = cluster.dbsize()
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{cluster.nodes[0].port}/0",
        "MITA_REDIS_MCP_SCAN_BUDGET": "100000",
        "MITA_REDIS_MCP_MAX_ITEMS": "10000",
        "MITA_REDIS_MCP_LOG_LEVEL": "WARNING",
    }
    out: dict[str, Any] = {"dbsize": dbsize}
    async with spawn(
        sys.executable, OURS, env, marker="mita_redis_mcp", reaper=reaper, errlog=errlog
    ) as ours:
        for name, pattern in (("dense", keyspace.WALK_DENSE), ("sparse", keyspace.WALK_SPARSE)):
            print(f"walk ({name}): keys {pattern!r} over {dbsize:,} keys", file=sys.stderr)
            mine = await walk_keys(ours, pattern, dbsize, 10_000)
            print(f"walk ({name}): raw SCAN of every primary", file=sys.stderr)
            raw = await raw_scan(cluster, pattern, dbsize)
            out[name] = {
                "mita_redis_mcp": mine,
                "raw_scan": raw,
                "examined_per_s_vs_raw": round(mine["examined_per_s"] / raw["examined_per_s"], 3),
            }
        print("keyspace_summary following next_cursor", file=sys.stderr)
        summary = await walk_summary(ours, opts.summary_seconds)
        summary["vs_raw_dense"] = round(
            summary["examined_per_s"] / out["dense"]["raw_scan"]["examined_per_s"], 3
        )
        out["keyspace_summary"] = summary
        out["server"] = ours.stats().as_dict()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=3_000_000)
    parser.add_argument("--primaries", type=int, default=3)
    parser.add_argument("--summary-seconds", type=float, default=600.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    opts = Options(args.keys, args.primaries, args.summary_seconds, args.output)
    reaper = Reaper()
    cluster = Primaries()
    log = Path(tempfile.gettempdir()) / "mita-redis-mcp-bench-cluster.log"
    with log.open("w") as errlog:
        return _run(opts, reaper, cluster, errlog)


def _run(opts: Options, reaper: Reaper, cluster: Primaries, errlog: TextIO) -> int:
    try:
        print(f"starting a cluster of {opts.primaries} primaries", file=sys.stderr)
        cluster = start_cluster(reaper, opts.primaries)
        owners = cluster.slot_owners()
        ports = [n.port for n in cluster.nodes]
        print(f"seeding {opts.keys:,} keys", file=sys.stderr)
        seeded = keyspace.seed(
            cluster,
            ports[0],
            opts.keys,
            big_string_bytes=0,
            big_hash_fields=0,
            pipe_for=lambda _port: SlotPipe(owners, ports),
        )
        results = {
            "keys": opts.keys,
            "primaries": opts.primaries,
            "seeded": asdict(seeded),
            "walk": anyio.run(measure, cluster, opts, reaper, errlog),
        }
    finally:
        cluster.stop()
        reaper.stop_all()
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
