"""Processes the benchmark starts: a redis-server on a free loopback port, and the MCP
servers that the SDK's stdio client spawns. Every one is recorded by pid and stopped by
pid at the end, also on errors (``Reaper``); ``/proc`` gives their memory and fds."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: the ppid follows its closing paren.
    return int(stat.rsplit(")", 1)[1].split()[1])


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used so far, user and system (utime + stime of
    /proc/PID/stat), in seconds. The kernel counts it in clock ticks (10 ms at the
    usual 100 Hz): meaningful over many calls, not one."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name's closing paren start at field 3 (state): utime
    # and stime are fields 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(marker: str) -> set[int]:
    """Pids of this process's direct children whose command line contains ``marker``."""
    me = os.getpid()
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            pid = int(entry.name)
            if parent_pid(pid) == me and marker in cmdline(pid):
                found.add(pid)
    return found


@dataclass(frozen=True)
class ProcStats:
    """Memory (bytes) and open file descriptors of one process, read from /proc."""

    rss: int
    hwm: int
    fds: int

    def as_dict(self) -> dict[str, float]:
        return {
            "rss_mb": round(self.rss / 2**20, 1),
            "peak_rss_mb": round(self.hwm / 2**20, 1),
            "fds": self.fds,
        }


def proc_stats(pid: int) -> ProcStats:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ProcStats(values["VmRSS"], values["VmHWM"], fds)


@dataclass
class Reaper:
    """Every process the benchmark started, by pid and the command line it had."""

    started: dict[int, str] = field(default_factory=dict)

    def track(self, pid: int) -> None:
        self.started[pid] = cmdline(pid)

    def stop_all(self) -> list[int]:
        """Stop (TERM, then KILL) each recorded process still running; return their pids."""
        stopped: list[int] = []
        for pid, line in self.started.items():
            # Only the process we started: the pid must still run the same command.
            if line and cmdline(pid) == line:
                stopped.append(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for pid in stopped:
            while cmdline(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.02)
            if cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _reap(pid)
        return stopped


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class RedisServer:
    """A redis-server on loopback, persisting nothing, in a temporary directory."""

    port: int
    process: subprocess.Popen[bytes]
    directory: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A connection of the benchmark's own (named ``bench-control``)."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=120, client_name="bench-control"
        )

    def version(self) -> str:
        with self.client() as client:
            return str(client.info("server")["redis_version"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_redis(
    reaper: Reaper,
    binary: str = "redis-server",
    *,
    port: int | None = None,
    extra: tuple[str, ...] = (),
) -> RedisServer:
    """A redis-server on ``port`` (a free one by default) with ``extra`` arguments,
    answering PING before this returns."""
    path = shutil.which(binary)
    if path is None:
        raise SystemExit(f"{binary} is not on PATH: install Redis (apt-get install redis-server)")
    port = free_port() if port is None else port
    directory = tempfile.mkdtemp(prefix="mita-redis-mcp-bench-")
    args = [
        path,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        directory,
        "--protected-mode",
        "yes",
        *extra,
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reaper.track(process.pid)
    server = RedisServer(port, process, directory)
    deadline = time.monotonic() + 15
    while True:
        try:
            with server.client() as client:
                client.ping()
            return server
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.02)


@contextlib.contextmanager
def bench_redis(name: str) -> Iterator[tuple[RedisServer, Reaper, Path, TextIO]]:
    """A redis-server on a free port, the reaper of every process the run starts, a
    work directory and the log the servers' stderr goes to: all stopped and removed at
    the end, also on errors."""
    reaper = Reaper()
    work = Path(tempfile.mkdtemp(prefix=f"mita-redis-mcp-bench-{name}-"))
    errlog = (work / "servers-stderr.log").open("w")
    server: RedisServer | None = None
    try:
        server = start_redis(reaper)
        yield server, reaper, work, errlog
    finally:
        errlog.close()
        if server is not None:
            server.stop()
        stopped = reaper.stop_all()
        if stopped:
            print(f"stopped leftover processes: {stopped}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
