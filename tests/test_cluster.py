"""Redis Cluster: the same tool suite on a standalone redis-server and on a real cluster
of 3 primaries, each with a replica, started here from redis-server processes. Then what
only a cluster can do to a walk: a primary failover mid-walk, a slot that moved (MOVED),
a slot half migrated (ASK), and a primary that dies.

One cluster serves the whole module (about 10 s to start); the test that kills a
primary runs last, since the cluster keeps one shard without a replica afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from mcp import Client
from pydantic import SecretStr

from mita_redis_mcp import cluster as clusters
from mita_redis_mcp.app import App
from mita_redis_mcp.config import Limits, Settings
from mita_redis_mcp.demo import BLOCKED_IP, BLOCKED_UA, DEMO_JTI, DEMO_USER, demo_commands
from mita_redis_mcp.doctor import ACL_USER, acl_setuser, run_checks
from mita_redis_mcp.errors import InvalidInput
from mita_redis_mcp.server import build_server
from tests.conftest import Answer, answer_of, call_tool, error_text, follow, installed
from tests.servers import ClusterSetup, ServerProcess, redis_binary, start_cluster, wait_until

pytestmark = pytest.mark.anyio

TYPED = {
    "tag:string": "string",
    "tag:hash": "hash",
    "tag:list": "list",
    "tag:set": "set",
    "tag:zset": "zset",
    "tag:stream": "stream",
}
SPREAD = [f"tag:k{i}" for i in range(40)]
OUTSIDE = [f"session:secret:{i}" for i in range(10)] + [f"other:{i}" for i in range(10)]
MISSING = [f"cache:{i:032x}" for i in range(6)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    setup = start_cluster(installed(redis_binary()))
    try:
        yield setup
    finally:
        setup.stop()


@dataclass
class Deployment:
    """One way Redis is deployed: a raw client to seed and check it, and its primaries."""

    name: str
    url: str
    raw: redis.Redis | redis.RedisCluster
    primaries: list[ServerProcess]


def primaries_of(setup: ClusterSetup) -> list[ServerProcess]:
    return [setup.node(port) for port, role in setup.roles().items() if role == "master"]


@pytest.fixture(params=["standalone", "cluster"])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    if request.param == "standalone":
        server: ServerProcess = request.getfixturevalue("redis_server")
        chosen = Deployment("standalone", server.url, server.client(), [server])
    else:
        setup: ClusterSetup = request.getfixturevalue("cluster")
        chosen = Deployment("cluster", setup.url, setup.client(), primaries_of(setup))
    chosen.raw.flushall()
    yield chosen
    chosen.raw.close()


def settings_for(url: str, tmp_path: Path, **limits: Any) -> Settings:
    return Settings(
        redis_url=SecretStr(url),
        profiles=("mita",),
        allow_writes=True,
        journal=tmp_path / "journal.jsonl",
        limits=Limits(**limits),
    )


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[App] = []

    def build(url: str, **limits: Any) -> App:
        app = App.from_settings(settings_for(url, tmp_path, **limits))
        made.append(app)
        return app

    yield build
    for app in made:
        await app.backend.close()


def seed(raw: redis.Redis | redis.RedisCluster) -> None:
    for command in demo_commands():
        raw.execute_command(*command)  # type: ignore[no-untyped-call]
    raw.set("tag:string", "s")
    raw.hset("tag:hash", "f", "v")
    raw.rpush("tag:list", "a", "b")
    raw.sadd("tag:set", "m")
    raw.zadd("tag:zset", {"m": 1})
    raw.xadd("tag:stream", {"f": "v"})
    for key in SPREAD + OUTSIDE:
        raw.set(key, key)


def in_scope(raw: redis.Redis | redis.RedisCluster, app: App) -> set[str]:
    every = {k.decode() for k in raw.scan_iter(count=1000)}
    return {k for k in every if app.scope.contains(k.encode())}


def dbsize(deployment: Deployment) -> int:
    """Keys held by every primary (redis-py's cluster DBSIZE asks only one node)."""
    total = 0
    for server in deployment.primaries:
        with server.client() as admin:
            total += admin.dbsize()
    return total


def listed(answers: list[Answer]) -> list[str]:
    return [entry["key"] for answer in answers for entry in answer["keys"]]


async def test_every_tool_gives_the_same_answers_on_standalone_and_on_a_cluster(
    deployment: Deployment, make: Any
) -> None:
    raw = deployment.raw
    seed(raw)
    app: App = make(deployment.url, max_items=5)
    if deployment.name == "cluster":
        # The keys sit on every primary, in many slots.
        owners = {raw.get_node_from_key(key).port for key in SPREAD}  # type: ignore[union-attr]
        assert len(owners) == 3

    for key, type_ in TYPED.items():
        got = answer_of(await call_tool(app, "get", {"key": key}))
        assert (got["exists"], got["type"], got["complete"]) == (True, type_, True)

    # A walk in pages of 5, its cursor carried across primaries: every key, once at least.
    walk = await follow(app, "keys", 100, pattern="tag:k*")
    assert set(listed(walk)) == set(SPREAD)
    assert len(walk) >= 8
    everything = await follow(app, "keys", 200)
    assert set(listed(everything)) == in_scope(raw, app)
    assert not set(listed(everything)) & set(OUTSIDE)

    info = answer_of(await call_tool(app, "info", {"section": "keyspace"}))
    assert info["sections"]["keyspace"]["db0"]["keys"] == dbsize(deployment)
    if deployment.name == "cluster":
        nodes = info["nodes"]
        assert len(nodes) == 3
        assert sum(n["sections"]["keyspace"]["db0"]["keys"] for n in nodes) == dbsize(deployment)
        assert all(n["address"] is None and " slots " in n["node"] for n in nodes)
        shown = answer_of(
            await call_tool(app, "info", {"section": "server", "include_addresses": True})
        )
        assert {n["address"] for n in shown["nodes"]} == {
            f"127.0.0.1:{p.port}" for p in deployment.primaries
        }
        assert shown["sections"]["server"]["redis_mode"] == "cluster"
    else:
        assert info["nodes"] is None

    summary = answer_of(await call_tool(app, "keyspace_summary", {}))
    assert summary["complete"] is True
    assert sum(ns["keys"] for ns in summary["namespaces"]) == len(in_scope(raw, app))

    limits = answer_of(
        await call_tool(
            app,
            "inspect_rate_limits",
            {"identifier": BLOCKED_IP, "user_agent": BLOCKED_UA, "endpoint": "auth_login"},
        )
    )
    assert [limiter["blocked"] for limiter in limits["limiters"]] == [True]
    sessions = answer_of(await call_tool(app, "list_sessions", {"user": DEMO_USER}))
    assert "1 revoked token(s)" in sessions["summary"]
    revoked = answer_of(await call_tool(app, "check_blacklist", {"jti": DEMO_JTI}))
    assert revoked["blacklisted"] is True

    for server in deployment.primaries:
        with server.client() as admin:
            admin.config_set("slowlog-log-slower-than", 0)
    try:
        slow = answer_of(await call_tool(app, "slowlog", {"count": 20}))
    finally:
        for server in deployment.primaries:
            with server.client() as admin:
                admin.config_set("slowlog-log-slower-than", 10_000)
    assert slow["available"] is True
    assert slow["entries"]
    latency = answer_of(await call_tool(app, "latency", {}))
    assert latency["available"] is True
    clients = answer_of(await call_tool(app, "clients", {}))
    assert clients["available"] is True
    assert clients["total"] >= 1
    nodes_named = {e["node"] for e in slow["entries"]} | {c["node"] for c in clients["clients"]}
    assert len(nodes_named) == (3 if deployment.name == "cluster" else 1)

    flags_before = [notify_flags(server) for server in deployment.primaries]
    misses = await hit_rate_with_misses(app, deployment)
    assert misses["cache"] >= len(MISSING)
    assert [notify_flags(server) for server in deployment.primaries] == flags_before

    # Writes: a new key, keys in several slots deleted, a pattern deleted, then undone.
    written = answer_of(await call_tool(app, "set", {"key": "tag:new", "value": "v"}))
    assert written["written"] is True
    doomed = SPREAD[:9]
    deleted = answer_of(await call_tool(app, "delete", {"keys": doomed}))
    assert (deleted["deleted"], deleted["requested"]) == (9, 9)
    assert raw.exists(*doomed) == 0
    dry = answer_of(await call_tool(app, "delete_pattern", {"pattern": "tag:k2*"}))
    assert dry["matched"] == 10  # tag:k20..tag:k29 (tag:k2 is deleted already)
    done = answer_of(
        await call_tool(
            app, "delete_pattern", {"pattern": "tag:k2*", "confirm_token": dry["confirm_token"]}
        )
    )
    assert done["deleted"] == 10
    undone = answer_of(await call_tool(app, "undo", {"count": 3}))
    assert len(undone["undone"]) == 3, undone
    assert raw.exists(*SPREAD) == len(SPREAD)
    assert raw.exists("tag:new") == 0
    assert raw.get("tag:k21") == b"tag:k21"


def notify_flags(server: ServerProcess) -> str:
    with server.client() as admin:
        return str(admin.config_get("notify-keyspace-events")["notify-keyspace-events"])


async def hit_rate_with_misses(app: App, deployment: Deployment) -> dict[str, int]:
    """cache_hit_rate observing misses, while another client misses cache keys (which
    sit on every primary of a cluster) once every primary has the subscription."""
    channel = "__keyevent@0__:keymiss"
    stop = threading.Event()
    subscribed: list[bool] = []

    def traffic() -> None:
        admins = [server.client() for server in deployment.primaries]
        try:
            while not stop.is_set():
                counts = [dict(a.pubsub_numsub(channel)).get(channel.encode(), 0) for a in admins]
                if all(counts):
                    subscribed.append(True)
                    for key in MISSING:
                        deployment.raw.get(key)
                    return
        finally:
            for admin in admins:
                admin.close()

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        answer = answer_of(
            await call_tool(app, "cache_hit_rate", {"window_seconds": 1, "observe_misses": True})
        )
    finally:
        stop.set()
        thread.join()
    assert subscribed == [True]
    return {m["namespace"]: m["misses"] for m in answer["misses_by_namespace"]}


# -- what only a cluster does ----------------------------------------------------------


def walked_primary(cursor: str) -> int:
    """The primary a keys cursor stands on (its combined SCAN cursor's index)."""
    return int(cursor.split(".")[1]) % (clusters.MAX_PRIMARIES + 1)


def shard_of(setup: ClusterSetup, index: int) -> tuple[ServerProcess, ServerProcess]:
    """The primary walked at ``index`` (slot order) and its replica."""
    with setup.client() as raw:
        ranges = sorted(raw.cluster_slots().items())
    by_primary: dict[int, int] = {}
    for (start, _end), entry in ranges:
        by_primary.setdefault(entry["primary"][1], start)
    port = sorted(by_primary, key=by_primary.__getitem__)[index]
    with setup.node(port).client() as primary:
        replica = primary.info("replication")["slave0"]["port"]
    return setup.node(port), setup.node(int(replica))


async def test_a_primary_failover_mid_walk_misses_no_key(cluster: ClusterSetup, make: Any) -> None:
    with cluster.client() as raw:
        raw.flushall()
        keys = [f"tag:f{i}" for i in range(300)]
        for key in keys:
            raw.set(key, "v")
    app: App = make(cluster.url, max_items=20)
    seen: list[str] = []
    cursor: str | None = None
    async with Client(build_server(app)) as client:
        for _ in range(6):
            answer = answer_of(
                await client.call_tool("keys", {"pattern": "tag:f*", "cursor": cursor})
            )
            seen += [entry["key"] for entry in answer["keys"]]
            cursor = answer["next_cursor"]
        assert cursor is not None
        primary, replica = shard_of(cluster, walked_primary(cursor))
        with replica.client() as promoted:
            promoted.execute_command("CLUSTER", "FAILOVER")
        wait_until(lambda: cluster.roles().get(replica.port) == "master", "the failover")
        wait_until(cluster.settled, "the cluster settles after the failover")
        while cursor is not None:
            answer = answer_of(
                await client.call_tool("keys", {"pattern": "tag:f*", "cursor": cursor})
            )
            seen += [entry["key"] for entry in answer["keys"]]
            cursor = answer["next_cursor"]
        assert set(seen) == set(keys)
        # The other tools go on answering, from the new primary.
        got = answer_of(await client.call_tool("get", {"key": "tag:f1"}))
        assert got["value"]["value"] == "v"
        info = answer_of(await client.call_tool("info", {"section": "keyspace"}))
        assert info["sections"]["keyspace"]["db0"]["keys"] == 300
    assert cluster.roles()[primary.port] == "slave"


@dataclass
class Migration:
    """A slot being moved from one primary to another, as redis-cli --cluster reshard
    does it: IMPORTING on the target, MIGRATING on the source, MIGRATE, SETSLOT NODE."""

    slot: int
    source: ServerProcess
    target: ServerProcess
    target_id: str

    def move(self, keys: list[bytes] | list[str]) -> None:
        with self.source.client() as src:
            src.execute_command(
                "MIGRATE", "127.0.0.1", self.target.port, "", 0, 5000, "KEYS", *keys
            )

    def finish(self, setup: ClusterSetup) -> None:
        """Move the keys left, then give the slot to the target on every node."""
        with self.source.client() as src:
            left = src.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, 1000)
        if left:
            self.move(left)
        live = [n for n in setup.nodes if n.process.poll() is None]
        for node in sorted(primaries_of(setup), key=lambda n: n is not self.target):
            with node.client() as each:
                each.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", self.target_id)

        def agreed() -> bool:
            for node in live:
                with node.client() as each:
                    ranges = each.execute_command("CLUSTER", "SLOTS")
                owner = next(e[2][1] for e in ranges if e[0] <= self.slot <= e[1])
                if int(owner) != self.target.port:
                    return False
            return True

        wait_until(agreed, "every node names the slot's new owner")


def begin_migration(setup: ClusterSetup, key: str) -> Migration:
    with setup.client() as raw:
        slot = raw.keyslot(key)
        source_port = int(raw.get_node_from_key(key).port)
        owners = {int(entry["primary"][1]) for entry in raw.cluster_slots().values()}
    target_port = next(p for p in sorted(owners) if p != source_port)
    source, target = setup.node(source_port), setup.node(target_port)
    with source.client() as src, target.client() as dst:
        source_id = src.execute_command("CLUSTER", "MYID").decode()
        target_id = dst.execute_command("CLUSTER", "MYID").decode()
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    return Migration(slot, source, target, target_id)


async def test_a_slot_half_migrated_is_read_and_deleted_through_ask(
    cluster: ClusterSetup, make: Any
) -> None:
    keys = [f"tag:{{mig}}:{i}" for i in range(6)]
    with cluster.client() as raw:
        raw.flushall()
        for key in keys:
            raw.set(key, key)
    app: App = make(cluster.url, max_items=100)
    migration = begin_migration(cluster, keys[0])
    try:
        migration.move(keys[:3])
        for key in (keys[0], keys[5]):  # moved (ASK), and not yet moved
            got = answer_of(await call_tool(app, "get", {"key": key}))
            assert got["value"]["value"] == key
        walk = await follow(app, "keys", 20, pattern="tag:*")
        assert sorted(listed(walk)) == sorted(keys)
        # One moved, one not: UNLINK of both gets TRYAGAIN, then goes key by key.
        deleted = answer_of(await call_tool(app, "delete", {"keys": [keys[1], keys[4]]}))
        assert deleted["deleted"] == 2
    finally:
        migration.finish(cluster)
    with cluster.client() as raw:
        assert [k for k in keys if raw.exists(k)] == [keys[0], keys[2], keys[3], keys[5]]


async def test_a_stale_slot_map_is_corrected_by_moved(cluster: ClusterSetup, make: Any) -> None:
    keys = [f"tag:{{moved}}:{i}" for i in range(4)] + [f"tag:s{i}" for i in range(40)]
    with cluster.client() as raw:
        raw.flushall()
        for key in keys:
            raw.set(key, key)
    app: App = make(cluster.url, max_items=10)
    async with Client(build_server(app)) as client:
        first = answer_of(await client.call_tool("get", {"key": keys[0]}))
        assert first["exists"] is True
        begun = answer_of(await client.call_tool("keys", {"pattern": "tag:*"}))
        while int(begun["next_cursor"].split(".")[1]) == 0:  # still in the first page
            arguments = {"pattern": "tag:*", "cursor": begun["next_cursor"]}
            begun = answer_of(await client.call_tool("keys", arguments))
        migration = begin_migration(cluster, keys[0])
        migration.finish(cluster)
        # The client still maps the slot to its old primary: MOVED sends it on.
        again = answer_of(await client.call_tool("get", {"key": keys[0]}))
        assert again["value"]["value"] == keys[0]
        deleted = answer_of(await client.call_tool("delete", {"keys": keys[:2]}))
        assert deleted["deleted"] == 2
        # A walk begun before the slot moved could miss keys: refused, then done anew.
        stale = await client.call_tool("keys", {"pattern": "tag:*", "cursor": begun["next_cursor"]})
        assert "slots moved between primaries" in error_text(stale)
    fresh = await follow(app, "keys", 20, pattern="tag:*")
    assert set(listed(fresh)) == set(keys[2:])


async def test_a_forged_cluster_cursor_is_refused(cluster: ClusterSetup, make: Any) -> None:
    app: App = make(cluster.url)
    walk = answer_of(await call_tool(app, "keys", {"pattern": "tag:*", "limit": 1}))
    bind = walk["next_cursor"].rsplit(".", 1)[1] if walk["next_cursor"] else "00000000"
    for combined in (2**128 - 1, 7, (1 << 64) | 7):
        forged = f"0.{combined}.10.0.-.{bind}"
        message = error_text(await call_tool(app, "keys", {"pattern": "tag:*", "cursor": forged}))
        assert "cursor" in message
    with pytest.raises(InvalidInput):
        clusters.resume(2**128, clusters.Topology(()))


async def test_the_cluster_is_detected_and_the_doctor_says_so(cluster: ClusterSetup) -> None:
    settings = Settings(redis_url=SecretStr(cluster.url), profiles=("mita",))
    app = App.from_settings(settings)
    try:
        before = app.backend.cluster  # nothing sent yet
        checks = {c.name: c for c in await run_checks(settings, app)}
        assert (before, app.backend.cluster) == (False, True)
        assert checks["mode"].detail.startswith("cluster: 3 primaries")
        assert checks["mode"].status == "OK"
    finally:
        await app.backend.close()


async def test_the_doctors_least_privilege_user_runs_every_read_tool_on_a_cluster(
    cluster: ClusterSetup, make: Any
) -> None:
    """The ACL line the doctor prints for a cluster (its +cluster|slots and +command
    included) is enough; ACL users are per node, so it is set on each."""
    with cluster.client() as raw:
        raw.flushall()
        seed(raw)
    scope = make(cluster.url)
    prefixes = [p.decode() for p in scope.scope.prefixes]
    rules = acl_setuser(prefixes, writes=False, password="pw-cluster", withheld=True, cluster=True)
    for node in cluster.nodes:
        with node.client() as admin:
            admin.execute_command("ACL", "SETUSER", *rules)
    try:
        url = cluster.url.replace("redis://", f"redis://{ACL_USER}:pw-cluster@")
        app: App = make(url, max_items=5)
        calls: list[tuple[str, dict[str, Any]]] = [
            ("get", {"key": "tag:hash"}),
            ("info", {}),
            ("keyspace_summary", {}),
            ("inspect_rate_limits", {"identifier": BLOCKED_IP, "user_agent": BLOCKED_UA}),
            ("list_sessions", {"user": DEMO_USER}),
            ("check_blacklist", {"jti": DEMO_JTI}),
            ("cache_hit_rate", {"window_seconds": 1, "observe_misses": True}),
            ("slowlog", {}),
            ("latency", {}),
            ("clients", {}),
        ]
        async with Client(build_server(app)) as client:
            for name, arguments in calls:
                answer = answer_of(await client.call_tool(name, arguments))
                assert answer.get("available", True) is True, (name, answer)
        assert set(listed(await follow(app, "keys", 50, pattern="tag:k*"))) == set(SPREAD)
    finally:
        for node in cluster.nodes:
            with node.client() as admin:
                admin.execute_command("ACL", "DELUSER", ACL_USER)


async def test_a_killed_primary_is_replaced_and_the_walk_goes_on(
    cluster: ClusterSetup, make: Any
) -> None:
    """Last in the module: the cluster keeps one shard without a replica."""
    with cluster.client() as raw:
        raw.flushall()
        keys = [f"tag:d{i}" for i in range(200)]
        for key in keys:
            raw.set(key, "v")
    app: App = make(cluster.url, max_items=20)
    async with Client(build_server(app)) as client:
        answer = answer_of(await client.call_tool("keys", {"pattern": "tag:d*"}))
        seen = [entry["key"] for entry in answer["keys"]]
        cursor = answer["next_cursor"]
        primary, replica = shard_of(cluster, walked_primary(cursor))
        primary.process.kill()
        primary.process.wait()
        wait_until(lambda: cluster.roles().get(replica.port) == "master", "the replica's takeover")
        wait_until(lambda: all(_cluster_ok(cluster)), "cluster_state:ok on every live node")
        while cursor is not None:
            result = await client.call_tool("keys", {"pattern": "tag:d*", "cursor": cursor})
            answer = answer_of(result)
            seen += [entry["key"] for entry in answer["keys"]]
            cursor = answer["next_cursor"]
        assert set(seen) == set(keys)
        info = answer_of(await client.call_tool("info", {"section": "keyspace"}))
        assert info["sections"]["keyspace"]["db0"]["keys"] == 200


def _cluster_ok(setup: ClusterSetup) -> list[bool]:
    states = []
    for node in setup.nodes:
        if node.process.poll() is not None:
            continue
        with node.client() as each:
            states.append(each.cluster("info")["cluster_state"] == "ok")
    return states


def test_the_combined_cursor_walks_each_primary_in_turn() -> None:
    view = clusters.Topology(
        (
            clusters.Shard("a" * 40, "h", 1, ((0, 8191),)),
            clusters.Shard("b" * 40, "h", 2, ((8192, 16383),)),
        )
    )
    start = clusters.resume(0, view)
    assert (start.index, start.node_cursor) == (0, 0)
    further = clusters.advance(start, 17, view)
    assert clusters.resume(further, view) == clusters.Place(0, 17)
    second = clusters.advance(clusters.Place(0, 17), 0, view)
    assert clusters.resume(second, view) == clusters.Place(1, 0)
    assert clusters.advance(clusters.Place(1, 5), 0, view) == 0
    # A failover: the same slots, another node id: that primary is walked from 0.
    failed_over = clusters.Topology(
        (view.shards[0], clusters.Shard("c" * 40, "h", 3, ((8192, 16383),)))
    )
    on_second = clusters.advance(clusters.Place(1, 0), 99, view)
    assert clusters.resume(on_second, failed_over) == clusters.Place(1, 0)
    # Slots moved: refused.
    resharded = clusters.Topology(
        (
            clusters.Shard("a" * 40, "h", 1, ((0, 9000),)),
            clusters.Shard("b" * 40, "h", 2, ((9001, 16383),)),
        )
    )
    with pytest.raises(InvalidInput, match="slots moved"):
        clusters.resume(on_second, resharded)
