"""The only module that talks to Redis.

``Backend`` wraps one redis-py asyncio client (a cluster client on a Redis Cluster,
whose walks the pure ``cluster`` module plans; in demo mode, an in-process fake server)
and offers the bounded commands the tools need, nothing more: there is no
method that sends KEYS, FLUSHDB, FLUSHALL, MONITOR or any unbounded read, so no tool
can reach one. Every command passes through ``_call``, ``_pipeline`` or (to one
cluster node) ``_on_node``, which count it (see ``meter``) and translate redis-py's
exceptions into ``errors`` whose messages are safe to show a model.

Keys reaching this module have already been checked by ``scope``: it does not check
them again, it only sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import anyio
import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from mita_redis_mcp import cluster as clusters
from mita_redis_mcp.config import Managed, SentinelTarget, Settings
from mita_redis_mcp.errors import (
    BackendError,
    BudgetExceeded,
    InvalidInput,
    NotOffered,
    RedisRefused,
    RedisTimeout,
    RedisUnavailable,
)

log = logging.getLogger(__name__)

Command = tuple[bytes | str | int | float, ...]
T = TypeVar("T")
U = TypeVar("U")


# Most distinct keys a meter remembers: beyond it, ``Meter.keys_dropped`` counts.
MAX_METERED_KEYS = 10_000


@dataclass
class Meter:
    """Counts the Redis commands one tool call sends (pipelined ones each count) and,
    when asked, the keys they name (for the audit log).

    A key is "touched" when a command names it as a key: TYPE, GET, UNLINK... SCAN's
    replies are not touched: a key only listed, never read, is not in ``keys``."""

    commands: int = 0
    # Held to ``budget``; ``reserved``: commands promised to a clean-up (restoring a
    # setting, leaving a subscription) that must run whatever the budget says.
    budget: int | None = None
    reserved: int = 0
    track_keys: bool = False
    keys: dict[bytes, None] = field(default_factory=dict)
    keys_dropped: int = 0
    # A Redis Cluster's primaries as this call first saw them (CLUSTER SLOTS, once).
    topology: clusters.Topology | None = None

    def touch(self, command: Sequence[Any]) -> None:
        if not self.track_keys or not command:
            return
        name = str(command[0]).upper()
        where = _KEY_ARGUMENTS.get(name)
        if where is None:
            return
        for arg in command[where]:
            key = arg.encode() if isinstance(arg, str) else arg
            if not isinstance(key, bytes) or key in self.keys:
                continue
            if len(self.keys) < MAX_METERED_KEYS:
                self.keys[key] = None
            else:
                self.keys_dropped += 1


# Where each key-bearing command the backend sends names its keys.
# fmt: off
_FIRST_ARGUMENT_IS_KEY = (
    "TYPE", "PTTL", "STRLEN", "HLEN", "LLEN", "SCARD", "ZCARD", "XLEN", "GETRANGE", "HSCAN",
    "SSCAN", "ZRANGE", "LRANGE", "XRANGE", "GET", "HGET", "SISMEMBER", "ZCOUNT",
    "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "SET", "DUMP", "RESTORE",
)
# fmt: on
_KEY_ARGUMENTS: dict[str, slice] = {
    **dict.fromkeys(_FIRST_ARGUMENT_IS_KEY, slice(1, 2)),
    "OBJECT": slice(2, 3),  # OBJECT ENCODING key
    "MEMORY": slice(2, 3),  # MEMORY USAGE key
    "UNLINK": slice(1, None),
    "WATCH": slice(1, None),
}


_meter: ContextVar[Meter | None] = ContextVar("mita_redis_mcp_meter", default=None)


@contextmanager
def meter(*, track_keys: bool = False, budget: int | None = None) -> Iterator[Meter]:
    """Count the commands sent inside this block (Upstash bills each one); with
    ``track_keys``, remember the keys they name; with ``budget``, a command that would
    exceed it raises ``BudgetExceeded`` unsent."""
    current = Meter(track_keys=track_keys, budget=budget)
    token = _meter.set(current)
    try:
        yield current
    finally:
        _meter.reset(token)


@dataclass(frozen=True)
class KeyMeta:
    """What Redis says about a key before its value is read."""

    type: str
    pttl: int
    encoding: str | None


@dataclass(frozen=True)
class StringHead:
    """A string key's TTL, length, and first bytes (see ``Backend.string_heads``)."""

    pttl: int
    size: int
    head: bytes


@dataclass(frozen=True)
class LimiterRead:
    """What to read about one rate-limiter key (see ``Backend.limiter_states``).

    ``counter``: GET (and GET/PTTL of ``companion``, a sliding window's previous
    counter). ``zset_log``: ZCOUNT of the scores after ``since``, the oldest of them,
    and the one ``nth`` places back from the newest. ``list_log``: the first ``nth``
    elements (timestamps, newest first).
    """

    key: bytes
    shape: str  # "counter", "zset_log" or "list_log"
    since: float = 0.0
    nth: int | None = None
    companion: bytes | None = None


@dataclass(frozen=True)
class LimiterState:
    """What Redis holds for one ``LimiterRead``; a read that met another type is None."""

    type: str
    pttl: int
    value: bytes | None = None
    count: int | None = None
    oldest: float | None = None
    nth: float | None = None
    entries: tuple[bytes, ...] = ()
    companion_value: bytes | None = None
    companion_pttl: int | None = None


@dataclass(frozen=True)
class OnNode(Generic[T]):
    """A node-local reply (INFO, SLOWLOG, CLIENT LIST...) and the node that gave it:
    ``node`` names a cluster primary without its address, ``address`` is its host:port
    (shown only where addresses may be); both ``None`` on a standalone server."""

    node: str | None
    address: str | None
    reply: T

    def with_reply(self, reply: U) -> OnNode[U]:
        return OnNode(self.node, self.address, reply)


class Backend:
    """Bounded Redis commands over one connection pool, or over a Redis Cluster (one
    pool per node, keys routed by slot)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        timeout: float,
        demo: bool = False,
        managed: Managed | None = None,
        cluster: RedisCluster | None = None,
        detect: Callable[[], RedisCluster] | None = None,
    ) -> None:
        """``cluster``: talk to a Redis Cluster through it (``client`` is then unused).
        ``detect``: on the first command, ask ``client``'s server whether it is a
        cluster node (INFO cluster) and, if so, switch to the client ``detect`` makes."""
        client.set_response_callback("INFO", _raw_reply)
        self._client = client
        self._cluster: RedisCluster | None = None
        self._detect = detect
        self._detecting = anyio.Lock()
        self._timeout = timeout
        self.demo = demo
        self.managed = managed
        if cluster is not None:
            self._use_cluster(cluster)

    @property
    def cluster(self) -> bool:
        """True when talking to a Redis Cluster (known after the first command when it
        is detected)."""
        return self._cluster is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> Backend:
        """Connect lazily: nothing is sent until the first command, so a Redis that is
        down at start does not stop the server, and it reconnects once Redis is back."""
        if settings.demo:
            return cls.in_memory(timeout=settings.limits.command_timeout)
        url = settings.redis_url.get_secret_value()
        options: dict[str, Any] = {
            "socket_timeout": settings.limits.command_timeout,
            "socket_connect_timeout": min(settings.limits.command_timeout, 5.0),
            "health_check_interval": 30,
            # One retry after a dropped connection (a restarted Redis), never after a
            # timeout: a slow command must fail within command_timeout, not twice that.
            "retry": Retry(
                ExponentialBackoff(cap=0.5, base=0.05),
                retries=1,
                supported_errors=(rexc.ConnectionError,),
            ),
        }
        if url.startswith(("rediss://", "rediss+sentinel://")):
            options["ssl_cert_reqs"] = (
                ssl.CERT_NONE if settings.tls_insecure_skip_verify else ssl.CERT_REQUIRED
            )
            options["ssl_check_hostname"] = not settings.tls_insecure_skip_verify
            if settings.tls_ca_file is not None:
                options["ssl_ca_certs"] = str(settings.tls_ca_file)
            if settings.tls_cert_file is not None:
                options["ssl_certfile"] = str(settings.tls_cert_file)
                options["ssl_keyfile"] = str(settings.tls_key_file)
        sentinel = settings.sentinel
        if sentinel is not None:
            client = _sentinel_client(sentinel, options)
        else:
            client = aioredis.Redis.from_url(url, decode_responses=False, **options)

        def cluster_client() -> RedisCluster:
            return RedisCluster.from_url(url, decode_responses=False, **options)

        cluster = cluster_client() if settings.cluster else None
        detect = (
            cluster_client
            if cluster is None and url.startswith(("redis://", "rediss://"))
            else None
        )
        return cls(
            client,
            timeout=settings.limits.command_timeout,
            managed=settings.managed,
            cluster=cluster,
            detect=detect,
        )

    @classmethod
    def in_memory(cls, *, timeout: float = 5.0) -> Backend:
        """An in-process fake Redis (fakeredis): demo mode, no server needed."""
        import fakeredis

        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=False)
        return cls(cast(aioredis.Redis, client), timeout=timeout, demo=True)

    async def close(self) -> None:
        if self._cluster is not None:
            await self._cluster.aclose()
        await self._client.aclose()

    # -- reads ---------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call("PING")

    async def scan(
        self, cursor: int, match: bytes, count: int, type_: str | None = None
    ) -> tuple[int, list[bytes]]:
        """One SCAN page. On a Redis Cluster, ``cursor`` is the combined cursor of a walk
        over every primary (see ``cluster``): one page of one primary per call."""
        tail: list[Any] = ["MATCH", match, "COUNT", count]
        if type_ is not None:
            tail += ["TYPE", type_]
        await self._ready()
        if self._cluster is not None:
            return await self._cluster_scan(cursor, tail)
        next_cursor, keys = await self._call("SCAN", _scan_cursor(cursor), *tail)
        return int(next_cursor), list(keys)

    async def _cluster_scan(self, cursor: int, tail: Sequence[Any]) -> tuple[int, list[bytes]]:
        view = await self._topology()
        place = clusters.resume(cursor, view)
        try:
            next_cursor, keys = await self._on_shard(
                view.shards[place.index], "SCAN", place.node_cursor, *tail
            )
        except RedisUnavailable:
            # The primary is gone: after a failover another node serves its slots.
            fresh = await self._topology(fresh=True)
            if fresh == view:
                raise
            view, place = fresh, clusters.resume(cursor, fresh)
            next_cursor, keys = await self._on_shard(
                view.shards[place.index], "SCAN", place.node_cursor, *tail
            )
        return clusters.advance(place, int(next_cursor), view), list(keys)

    async def types_and_ttls(self, keys: Sequence[bytes]) -> list[tuple[str, int]]:
        """TYPE and PTTL of each key, in one pipeline."""
        commands: list[Command] = []
        for key in keys:
            commands += [("TYPE", key), ("PTTL", key)]
        replies = await self._pipeline(commands)
        return [(_text(replies[i]), int(replies[i + 1])) for i in range(0, len(replies), 2)]

    async def key_meta(self, key: bytes) -> KeyMeta:
        """TYPE, PTTL and OBJECT ENCODING in one pipeline. OBJECT is optional: managed
        Redis (Upstash) refuses it, and then ``encoding`` is ``None``."""
        type_, pttl, encoding = await self._pipeline(
            [("TYPE", key), ("PTTL", key), ("OBJECT", "ENCODING", key)], optional={2}
        )
        return KeyMeta(_text(type_), int(pttl), _text(encoding) if encoding else None)

    async def key_and_string(
        self, key: bytes, start: int, end: int
    ) -> tuple[KeyMeta, StringHead | None]:
        """``key_meta`` plus, in the same round trip, STRLEN and GETRANGE ``start``..
        ``end`` (bounded: never a GET). Both are optional: on a key of another type
        Redis answers WRONGTYPE, and the head is ``None``."""
        type_, pttl, encoding, size, data = await self._pipeline(
            [
                ("TYPE", key),
                ("PTTL", key),
                ("OBJECT", "ENCODING", key),
                ("STRLEN", key),
                ("GETRANGE", key, start, end),
            ],
            optional={2, 3, 4},
        )
        meta = KeyMeta(_text(type_), int(pttl), _text(encoding) if encoding else None)
        if size is None or data is None:
            return meta, None
        return meta, StringHead(int(pttl), int(size), bytes(data))

    async def length(self, key: bytes, type_: str) -> int:
        command = _LENGTH_COMMANDS[type_]
        return int(await self._call(command, key))

    async def getrange(self, key: bytes, start: int, end: int) -> bytes:
        return bytes(await self._call("GETRANGE", key, start, end))

    async def hscan(
        self, key: bytes, cursor: int, count: int
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        next_cursor, flat = await self._call("HSCAN", key, cursor, "COUNT", count)
        items = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
        return int(next_cursor), [(bytes(f), bytes(v)) for f, v in items]

    async def sscan(self, key: bytes, cursor: int, count: int) -> tuple[int, list[bytes]]:
        next_cursor, members = await self._call("SSCAN", key, cursor, "COUNT", count)
        return int(next_cursor), [bytes(m) for m in members]

    async def zrange(self, key: bytes, start: int, stop: int) -> list[tuple[bytes, float]]:
        reply = await self._call("ZRANGE", key, start, stop, "WITHSCORES")
        if reply and isinstance(reply[0], (list, tuple)):
            return [(bytes(m), float(s)) for m, s in reply]
        return [(bytes(m), float(s)) for m, s in zip(reply[::2], reply[1::2], strict=True)]

    async def lrange(self, key: bytes, start: int, stop: int) -> list[bytes]:
        return [bytes(v) for v in await self._call("LRANGE", key, start, stop)]

    async def xrange(
        self, key: bytes, start: bytes, count: int
    ) -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
        reply = await self._call("XRANGE", key, start, b"+", "COUNT", count)
        entries: list[tuple[bytes, list[tuple[bytes, bytes]]]] = []
        for entry_id, fields in reply:
            pairs = (
                fields.items()
                if isinstance(fields, dict)
                else zip(fields[::2], fields[1::2], strict=True)
            )
            entries.append((bytes(entry_id), [(bytes(f), bytes(v)) for f, v in pairs]))
        return entries

    async def info(self, section: str | None) -> str:
        """INFO's raw text (parsed by ``info.parse_info``, not by redis-py, to keep the
        sections). On a Redis Cluster, one node's: see ``info_by_node``."""
        if self.demo:
            return await self._demo_info()
        args = ("INFO", section) if section else ("INFO",)
        return _text(await self._call(*args))

    async def info_by_node(self, section: str | None) -> list[OnNode[str]]:
        """INFO of every primary of a Redis Cluster, or of the one server."""
        if self.demo:
            return [OnNode(None, None, await self._demo_info())]
        args = ("INFO", section) if section else ("INFO",)
        return [OnNode(n.node, n.address, _text(n.reply)) for n in await self._each(*args)]

    async def _demo_info(self) -> str:
        """The in-process fake has no INFO: describe its keyspace the same way."""
        keys = int(await self._call("DBSIZE"))
        return (
            "# Server\r\nredis_version:demo\r\nredis_mode:standalone\r\n"
            f"# Keyspace\r\ndb0:keys={keys}\r\n"
        )

    # -- sessions and blacklist --------------------------------------------------------

    async def string_heads(self, keys: Sequence[bytes], max_bytes: int) -> list[StringHead | None]:
        """PTTL, STRLEN and the first ``max_bytes`` bytes (GETRANGE, never an unbounded
        GET) of each string key, in one pipeline. ``None`` for a key that is no longer a
        string; a missing key has ``pttl == -2``."""
        commands: list[Command] = []
        for key in keys:
            commands += [("PTTL", key), ("STRLEN", key), ("GETRANGE", key, 0, max_bytes - 1)]
        # WRONGTYPE (the key changed type since it was found) spares the other keys.
        optional = {i for i in range(len(commands)) if i % 3}
        replies = await self._pipeline(commands, optional=optional)
        heads: list[StringHead | None] = []
        for i in range(0, len(replies), 3):
            pttl, size, head = replies[i : i + 3]
            if pttl is None or size is None or head is None:
                heads.append(None)
            else:
                heads.append(StringHead(int(pttl), int(size), bytes(head)))
        return heads

    async def sismember(self, key: bytes, member: bytes) -> bool:
        return bool(await self._call("SISMEMBER", key, member))

    async def config_get(self, parameter: str) -> str | None:
        """One CONFIG GET parameter; ``None`` when the server refuses CONFIG (managed
        Redis such as Upstash, an ACL user without +config) or does not know it. On a
        Redis Cluster, every primary is asked: where they differ, their values joined by
        commas."""
        try:
            replies = await self._each("CONFIG", "GET", parameter)
        except RedisRefused:
            return None
        values = [_config_value(r.reply) for r in replies]
        if any(v is None for v in values):
            return None
        return ",".join(dict.fromkeys(v for v in values if v is not None))

    # -- cache, keyspace, diagnostics ------------------------------------------------

    async def memory_usage(self, keys: Sequence[bytes]) -> list[int | None] | None:
        """MEMORY USAGE of each key, pipelined, with Redis's default sampling (a few
        elements of a collection, extrapolated: never SAMPLES 0, which reads every
        element of a huge collection). ``None`` when the server refuses MEMORY (an ACL
        user without it, a managed Redis); an entry is ``None`` for a key gone since it
        was found. MEMORY USAGE is not a keyspace lookup: it leaves
        keyspace_hits/misses alone."""
        if not keys:
            return []
        try:
            first = await self._call("MEMORY", "USAGE", keys[0])
        except RedisRefused:
            return None
        rest = await self._pipeline(
            [("MEMORY", "USAGE", key) for key in keys[1:]],
            optional=set(range(len(keys) - 1)),
        )
        return [None if r is None else int(r) for r in [first, *rest]]

    async def types_ttls_memory(
        self, keys: Sequence[bytes]
    ) -> tuple[list[tuple[str, int]], list[int | None] | None]:
        """TYPE, PTTL and MEMORY USAGE (default sampling, as ``memory_usage``) of each
        key, in one pipeline. The memory list is ``None`` when the server refuses MEMORY
        (an ACL user without it, a managed Redis); an entry is ``None`` for a key gone
        since it was found."""
        commands: list[Command] = []
        for key in keys:
            commands += [("TYPE", key), ("PTTL", key), ("MEMORY", "USAGE", key)]
        replies = await self._pipeline(commands, optional=set(range(2, len(commands), 3)))
        metas = [(_text(replies[i]), int(replies[i + 1])) for i in range(0, len(replies), 3)]
        usage = [None if r is None else int(r) for r in replies[2::3]]
        # No MEMORY answer although a key exists: refused, not every key gone.
        if all(u is None for u in usage) and any(t != "none" for t, _ in metas):
            return metas, None
        return metas, usage

    async def dbsize(self) -> int | None:
        """DBSIZE (keys in the database, in and out of scope: a count, no key), summed
        over the primaries of a Redis Cluster; ``None`` when the server refuses it."""
        try:
            return sum(int(r.reply) for r in await self._each("DBSIZE"))
        except RedisRefused:
            return None

    async def lengths(self, keys: Sequence[tuple[bytes, str]]) -> list[int | None]:
        """The length (bytes of a string, items of a collection) of each (key, type),
        pipelined; ``None`` for a type without a length command or a key that changed."""
        known = [(key, _LENGTH_COMMANDS[t]) for key, t in keys if t in _LENGTH_COMMANDS]
        replies = iter(
            await self._pipeline(
                [(command, key) for key, command in known], optional=set(range(len(known)))
            )
        )
        return [
            (None if (r := next(replies)) is None else int(r)) if t in _LENGTH_COMMANDS else None
            for _key, t in keys
        ]

    async def counter_values(
        self, keys: Sequence[bytes], hash_field: bytes | None
    ) -> list[int | None]:
        """App-kept hit counters, pipelined: HGET ``hash_field`` of each HASH, or the
        first 32 bytes of each STRING. ``None`` for a missing or non-integer counter.
        These are keyspace lookups: callers read them outside a sampling window."""
        commands: list[Command] = [
            ("HGET", key, hash_field) if hash_field is not None else ("GETRANGE", key, 0, 31)
            for key in keys
        ]
        replies = await self._pipeline(commands, optional=set(range(len(commands))))
        values: list[int | None] = []
        for reply in replies:
            text = _text(reply).strip() if reply is not None else ""
            values.append(int(text) if text.lstrip("-").isdigit() else None)
        return values

    @property
    def db(self) -> int:
        """The database number the connection selects (keyspace events name it)."""
        if self._cluster is not None:
            return 0
        return int(self._client.connection_pool.connection_kwargs.get("db", 0) or 0)

    async def slowlog_get(self, count: int) -> list[OnNode[list[Any]]]:
        """SLOWLOG GET ``count`` (raw entries; bounded by ``count``), of each primary of
        a Redis Cluster or of the one server."""
        return [n.with_reply(list(n.reply)) for n in await self._each("SLOWLOG", "GET", count)]

    async def latency_latest(self) -> list[OnNode[list[Any]]]:
        """LATENCY LATEST: one entry per event that crossed the monitor threshold, per
        primary of a Redis Cluster or of the one server."""
        return [n.with_reply(list(n.reply)) for n in await self._each("LATENCY", "LATEST")]

    async def client_lists(self) -> list[OnNode[str]]:
        """CLIENT LIST's raw text (one line per connection), per primary of a Redis
        Cluster or of the one server."""
        return [n.with_reply(_text(n.reply)) for n in await self._each("CLIENT", "LIST")]

    async def client_list(self) -> str:
        """CLIENT LIST's raw text, one line per connection (of every primary)."""
        return "\n".join(n.reply.rstrip("\n") for n in await self.client_lists())

    async def notify_keyspace_events(self) -> str:
        """CONFIG GET notify-keyspace-events (the only CONFIG parameter Upstash has). On
        a Redis Cluster the primaries must agree, or the change could not be restored
        exactly: ``RedisRefused`` otherwise."""
        replies = await self._each("CONFIG", "GET", "notify-keyspace-events")
        values = {_config_value(r.reply) or "" for r in replies}
        if len(values) > 1:
            raise RedisRefused(
                "CLUSTER",
                "the cluster's primaries have different notify-keyspace-events; not changing them",
            )
        return values.pop()

    async def set_notify_keyspace_events(self, flags: str, *, restoring: bool = False) -> None:
        """CONFIG SET notify-keyspace-events: a server-wide change (on every primary of
        a Redis Cluster), made only by an explicit opt-in and always restored by the
        caller (``restoring``: the command budget reserved for it when the change was
        made, so it is never refused)."""
        args = ("CONFIG", "SET", "notify-keyspace-events", flags)
        nodes = len((await self._topology()).shards) if self._cluster is not None else 1
        if restoring:
            await self._each(*args, release=True)
        else:
            await self._each(*args, reserve=nodes)

    @asynccontextmanager
    async def key_events(
        self, channel: bytes, on_key: Callable[[bytes], None]
    ) -> AsyncIterator[None]:
        """Subscribe to one keyspace-notification channel for the body's duration and
        pass each event's key to ``on_key``. Events are node-local: on a Redis Cluster,
        every primary is subscribed to.

        On a normal exit a PING goes down each subscribed connection and events are
        read until its reply: Redis answers in order, so every event published while the
        body ran has been counted (no wait for stragglers). On cancellation or an error
        the listeners stop at once. SUBSCRIBE, PING and UNSUBSCRIBE use connections of
        their own and are counted as commands."""
        await self._ready()
        if self._cluster is None:
            pubsubs = [self._client.pubsub()]
        else:
            view = await self._topology()
            nodes = [await self._shard_node(shard) for shard in view.shards]
            pubsubs = [self._cluster.pubsub(node=node) for node in nodes]
        try:
            # PING and UNSUBSCRIBE run whatever the budget says.
            _count(len(pubsubs), reserve=2 * len(pubsubs))
            try:
                for pubsub in pubsubs:
                    await pubsub.subscribe(channel)
            except rexc.RedisError as exc:
                raise self._translate(exc, "SUBSCRIBE") from exc

            async def listen(pubsub: aioredis.client.PubSub, drained: anyio.Event) -> None:
                while True:
                    message = await pubsub.get_message(timeout=self._timeout)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        on_key(bytes(message["data"]))
                    elif message["type"] == "pong":
                        drained.set()
                        return

            drains = [anyio.Event() for _ in pubsubs]
            async with anyio.create_task_group() as group:
                for pubsub, drained in zip(pubsubs, drains, strict=True):
                    group.start_soon(listen, pubsub, drained)
                try:
                    yield
                except BaseException:
                    # Cancelled or failed: the listeners are being cancelled too, so no
                    # PONG would be read; waiting for one would only wait for the timeout.
                    group.cancel_scope.cancel()
                    raise
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                    _count(len(pubsubs), release=True)
                    for pubsub in pubsubs:
                        await pubsub.ping()
                    for drained in drains:
                        await drained.wait()
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                _count(len(pubsubs), release=True)
                for pubsub in pubsubs:
                    try:
                        await pubsub.unsubscribe()
                    except rexc.RedisError:
                        log.debug("UNSUBSCRIBE failed; the connection is closed instead")
            for pubsub in pubsubs:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    # -- rate limits -------------------------------------------------------------------

    async def time(self) -> float:
        """The server's clock (TIME), in unix seconds: limiter windows are judged by the
        clock that wrote them, not by this machine's."""
        reply = await self._call("TIME")
        seconds, micros = (int(part) for part in reply)
        return seconds + micros / 1_000_000

    async def limiter_states(self, reads: Sequence[LimiterRead]) -> list[LimiterState]:
        """TYPE, PTTL and the bounded reads each ``LimiterRead`` asks for, in one
        pipeline (2 to 5 commands per key). A read that meets another type (the key
        changed since it was found) yields ``None`` in its field, not an error."""
        commands: list[Command] = []
        spans: list[tuple[int, int]] = []
        for read in reads:
            start = len(commands)
            commands += [("TYPE", read.key), ("PTTL", read.key)]
            commands += _limiter_commands(read)
            spans.append((start, len(commands)))
        value_reads = {i for start, end in spans for i in range(start + 2, end)}
        replies = await self._pipeline(commands, optional=value_reads)
        return [
            _limiter_state(read, replies[start:end])
            for read, (start, end) in zip(reads, spans, strict=True)
        ]

    # -- doctor --------------------------------------------------------------------------

    # Every command the tools send, as ACL DRYRUN checks it ("{key}": a key under each
    # allowed prefix; "{db}": the database number), with what needs it. "core": most tools
    # fail without it; "optional": one tool or one detail is lost; "write": only with
    # --allow-writes. tests/test_doctor.py compares it with what Redis saw the tools send.
    REQUIRED_COMMANDS = (
        ("core", "PING", "connection health checks"),
        ("core", "SCAN 0 MATCH {key}* COUNT 10", "keys and every domain tool"),
        ("core", "TYPE {key}", "get, keys and the domain tools"),
        ("core", "PTTL {key}", "get, keys and the domain tools"),
        ("core", "GETRANGE {key} 0 31", "get, list_sessions, check_blacklist"),
        ("core", "STRLEN {key}", "get, list_sessions, check_blacklist"),
        ("core", "HLEN {key}", "get"),
        ("core", "LLEN {key}", "get"),
        ("core", "SCARD {key}", "get, list_sessions"),
        ("core", "ZCARD {key}", "get, list_sessions"),
        ("core", "XLEN {key}", "get"),
        ("core", "HSCAN {key} 0 COUNT 10", "get"),
        ("core", "SSCAN {key} 0 COUNT 10", "get, list_sessions"),
        ("core", "ZRANGE {key} 0 9 WITHSCORES", "get, list_sessions"),
        ("core", "LRANGE {key} 0 9", "get, inspect_rate_limits"),
        ("core", "XRANGE {key} - + COUNT 10", "get"),
        ("core", "GET {key}", "inspect_rate_limits"),
        ("core", "HGET {key} access_count", "cache_hit_rate"),
        ("core", "SISMEMBER {key} member", "check_blacklist"),
        ("core", "ZCOUNT {key} 0 +inf", "inspect_rate_limits"),
        ("core", "ZRANGEBYSCORE {key} 0 +inf WITHSCORES LIMIT 0 1", "inspect_rate_limits"),
        ("core", "ZREVRANGEBYSCORE {key} +inf 0 WITHSCORES LIMIT 0 1", "inspect_rate_limits"),
        ("core", "TIME", "inspect_rate_limits"),
        ("core", "INFO stats", "info, cache_hit_rate"),
        ("optional", "OBJECT ENCODING {key}", "get (the encoding)"),
        ("optional", "MEMORY USAGE {key}", "keyspace_summary (memory per key)"),
        ("optional", "DBSIZE", "keyspace_summary (page size)"),
        ("optional", "CONFIG GET maxmemory-policy", "check_blacklist, cache_hit_rate misses"),
        ("optional", "CONFIG SET notify-keyspace-events Em", "cache_hit_rate misses"),
        ("optional", "SUBSCRIBE __keyevent@{db}__:keymiss", "cache_hit_rate misses"),
        ("optional", "UNSUBSCRIBE", "cache_hit_rate misses"),
        ("optional", "SLOWLOG GET 10", "slowlog"),
        ("optional", "LATENCY LATEST", "latency"),
        ("optional", "CLIENT LIST", "clients"),
        ("write", "SET {key} value", "set"),
        ("write", "UNLINK {key}", "delete, delete_pattern, undo"),
        ("write", "DUMP {key}", "set, delete, delete_pattern, undo (the undo journal)"),
        ("write", "RESTORE {key} 0 payload REPLACE", "undo"),
        ("write", "WATCH {key}", "undo (its check and restore are one transaction)"),
        ("write", "MULTI", "undo"),
        ("write", "EXEC", "undo"),
        ("cluster", "CLUSTER SLOTS", "every tool on a Redis Cluster (finding its primaries)"),
        ("cluster", "COMMAND", "the cluster client (redis-py reads key positions on connect)"),
    )

    async def authenticates(self) -> bool:
        """PING: True when Redis answers, False when it refuses the credentials (wrong,
        missing or unexpected password). Raises ``BackendError`` for anything else."""
        try:
            await self._call("PING")
        except RedisUnavailable as exc:
            if isinstance(exc.__cause__, rexc.AuthenticationError):
                return False
            raise
        return True

    async def sentinel_view(self) -> SentinelView | None:
        """How each Sentinel of a redis+sentinel:// URL sees the primary (``None`` for any
        other URL): for doctor, which must tell a wrong master name from Sentinels that
        are down. Sent to the Sentinels, not through ``_call``: no data command."""
        pool = self._client.connection_pool
        if not isinstance(pool, SentinelConnectionPool):
            return None
        manager = pool.sentinel_manager
        view = SentinelView(pool.service_name, len(manager.sentinels))
        for sentinel in manager.sentinels:
            try:
                masters = await sentinel.sentinel_masters()
            except rexc.RedisError as exc:
                if isinstance(exc, rexc.AuthenticationError):
                    reason = "refused the credentials (sentinel_password in REDIS_URL)"
                elif isinstance(exc, rexc.ConnectionError):
                    reason = _connection_reason(exc)
                else:
                    reason = str(self._translate(exc, "SENTINEL MASTERS"))
                view.problems.setdefault(reason, None)
                continue
            view.answered += 1
            view.monitored.update(dict.fromkeys(str(name) for name in masters))
            state = masters.get(pool.service_name)
            if state is not None and manager.check_master_state(state, pool.service_name):
                view.naming += 1
            elif state is not None:
                view.down += 1
        return view

    async def acl_whoami(self) -> str | None:
        """ACL WHOAMI; ``None`` when the server refuses it (Redis < 6, managed Redis)."""
        try:
            return _text(await self._call("ACL", "WHOAMI"))
        except RedisRefused:
            return None

    async def acl_dryrun(self, user: str, commands: Sequence[Command]) -> list[str | None]:
        """ACL DRYRUN of each command as ``user`` (nothing is executed), pipelined: "OK"
        where the user may run it, else Redis's reason; ``None`` where Redis could not
        judge it. Raises ``RedisRefused`` when ACL DRYRUN itself is refused (Redis < 7,
        a user without +acl, managed Redis)."""
        if not commands:
            return []
        first = _text(await self._call("ACL", "DRYRUN", user, *commands[0]))
        rest = await self._pipeline(
            [("ACL", "DRYRUN", user, *command) for command in commands[1:]],
            optional=set(range(len(commands) - 1)),
        )
        return [first, *(None if reply is None else _text(reply) for reply in rest)]

    # -- undo journal ------------------------------------------------------------------

    async def dump_states(self, keys: Sequence[bytes]) -> list[tuple[str, int, bytes | None]]:
        """(TYPE, PTTL, DUMP) of each key, in one pipeline; DUMP is ``None`` for an
        absent key. DUMP is Redis's own serialization: value, type and encoding, which
        RESTORE puts back exactly."""
        if not keys:
            return []
        commands: list[Command] = []
        for key in keys:
            commands += [("TYPE", key), ("PTTL", key), ("DUMP", key)]
        replies = await self._pipeline(commands)
        states: list[tuple[str, int, bytes | None]] = []
        for i in range(0, len(replies), 3):
            type_, pttl, dump = replies[i : i + 3]
            states.append((_text(type_), int(pttl), None if dump is None else bytes(dump)))
        return states

    async def restore_unless_changed(
        self,
        keys: Sequence[bytes],
        plan: Callable[[], Awaitable[Sequence[tuple[bytes, int, bytes | None]]]],
    ) -> bool:
        """Put keys back, and the check that decides which, as one transaction
        (``write_unless_changed``): ``plan()`` reads them and returns what to put back
        as (key, PTTL, DUMP), empty for nothing; each is RESTORE ... REPLACE with the
        PTTL (0: no expiry), or UNLINK where the DUMP is ``None`` (absent). Returns
        False, having written nothing, when another client wrote a watched key."""

        async def commands() -> list[Command]:
            return [
                ("UNLINK", key)
                if dump is None
                else ("RESTORE", key, _restore_ttl(pttl), dump, "REPLACE")
                for key, pttl, dump in await plan()
            ]

        return await self.write_unless_changed(keys, commands) is not None

    async def write_unless_changed(
        self, keys: Sequence[bytes], plan: Callable[[], Awaitable[Sequence[Command]]]
    ) -> list[Any] | None:
        """Read, decide and write as one transaction: WATCH ``keys``, await ``plan()``
        (it reads them, on other connections, and returns the commands to run; empty
        for none), then MULTI, the commands, EXEC. Returns the commands' replies, or
        ``None``, having written nothing, when another client wrote a watched key
        between the WATCH and the EXEC (what ``plan`` read is then stale).

        It always ends the WATCH with an EXEC (empty when there is nothing to run, or
        ``plan`` raised), never with UNWATCH, which a least-privilege user may not run.
        In a cluster, WATCH and MULTI/EXEC hold within one hash slot: ``keys`` must then
        share a slot (group them with ``slot_groups``, one call per group)."""
        watch: Command = ("WATCH", *keys)
        for command in (watch, ("MULTI",), ("EXEC",)):
            _require_offered(self.managed, command)
        await self._ready()
        _count(1, watch)
        client: aioredis.Redis | RedisCluster = self._cluster or self._client
        commands: list[Command] = []
        try:
            async with client.pipeline(transaction=True) as pipe:
                await pipe.watch(*keys)
                try:
                    commands = list(await plan())
                    for command in commands:
                        _require_offered(self.managed, command)
                    _count(len(commands) + 2, ("MULTI",), *commands, ("EXEC",))
                except BaseException:
                    _count(2, ("MULTI",), ("EXEC",), release=True)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    with contextlib.suppress(rexc.RedisError):
                        await pipe.execute()
                    raise
                pipe.multi()  # type: ignore[no-untyped-call]
                for command in commands:
                    pipe.execute_command(*command)
                replies = list(await pipe.execute(raise_on_error=False))
        except rexc.WatchError:
            return None
        except rexc.ResponseError as exc:
            # Refused while queueing: redis-py's text quotes the command (keys, values,
            # DUMP payloads), so only the error code goes on.
            found = _QUEUED_ERROR_CODE.search(str(exc))
            code = next(
                (code for kind, code in _STRIPPED_CODES if isinstance(exc, kind)),
                found[1] if found else "ERR",
            )
            # "Command # N (...)": which queued command Redis refused, by its name only.
            number = _QUEUED_COMMAND_NUMBER.search(str(exc))
            refused = (
                _text(commands[int(number[1]) - 1][0]).upper()
                if number and 0 < int(number[1]) <= len(commands)
                else "the transaction"
            )
            raise RedisRefused(code, f"Redis refused {refused}: {code}") from exc
        except rexc.RedisError as exc:
            raise self._translate(exc, "EXEC") from exc
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, rexc.RedisError):
                raise self._translate(reply, str(command[0])) from reply
        return replies

    # -- writes (the tools call these only when writes are on) -----------------------

    async def unlink(self, keys: Sequence[bytes]) -> int:
        """UNLINK ``keys``: one command, or on a Redis Cluster one per hash slot (a
        command's keys must share one), pipelined."""
        await self._ready()
        groups = self.slot_groups(keys)
        if len(groups) == 1:
            return int(await self._unlink_group(groups[0]))
        replies = await self._pipeline(
            [("UNLINK", *group) for group in groups], optional=set(range(len(groups)))
        )
        deleted = 0
        for group, reply in zip(groups, replies, strict=True):
            # None: TRYAGAIN, the slot is migrating with some of these keys moved. One
            # key at a time is always served (redirected with ASK where it moved).
            deleted += int(reply) if reply is not None else await self._unlink_one_by_one(group)
        return deleted

    async def _unlink_group(self, keys: Sequence[bytes]) -> int:
        try:
            return int(await self._call("UNLINK", *keys))
        except BackendError:
            if self._cluster is None or len(keys) == 1:
                raise
            return await self._unlink_one_by_one(keys)

    async def _unlink_one_by_one(self, keys: Sequence[bytes]) -> int:
        return sum(int(r) for r in await self._pipeline([("UNLINK", key) for key in keys]))

    def slot_groups(self, keys: Sequence[bytes]) -> list[list[bytes]]:
        """``keys`` grouped by Redis Cluster hash slot, in order of first appearance: one
        group on a standalone server. A multi-key command (UNLINK, WATCH, MULTI/EXEC)
        works within one group."""
        if self._cluster is None:
            return [list(keys)] if keys else []
        groups: dict[int, list[bytes]] = {}
        for key in keys:
            groups.setdefault(self._cluster.keyslot(key), []).append(key)
        return list(groups.values())

    async def load(self, commands: Sequence[Command]) -> None:
        """Run prepared write commands (seeding the demo keyspace; never from a tool)."""
        await self._pipeline(commands)

    # -- the one door ------------------------------------------------------------------

    def sends(self, command: Command) -> bool:
        """False for a command this backend never sends (``--managed``: one the
        provider lacks)."""
        return offered(self.managed, command)

    async def _call(self, *args: Any, reserve: int = 0, release: bool = False) -> Any:
        _require_offered(self.managed, args)
        await self._ready()
        cluster = self._cluster
        if cluster is not None and not _keyed(args):
            return await self._on_node(None, args, reserve=reserve, release=release)
        _count(1, args, reserve=reserve, release=release)
        try:
            if cluster is not None:
                return await cluster.execute_command(*args)
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            raise self._translate(exc, str(args[0])) from exc

    # -- Redis Cluster -----------------------------------------------------------------

    async def primaries(self) -> int | None:
        """How many primaries the Redis Cluster has; ``None`` on a standalone server."""
        await self._ready()
        return len((await self._topology()).shards) if self._cluster is not None else None

    async def _ready(self) -> None:
        """On the first command, when asked to: find out whether the server is a cluster
        node and, if so, switch to the cluster client. Like redis-py's own connection
        set-up (HELLO, CLUSTER SLOTS), this INFO is not counted as a tool's command."""
        if self._detect is None:
            return
        async with self._detecting:
            await self._detect_cluster()

    async def _detect_cluster(self) -> None:
        detect = self._detect
        if detect is None:
            return
        try:
            reply = await self._client.execute_command("INFO", "cluster")  # type: ignore[no-untyped-call]
        except rexc.ResponseError:
            self._detect = None  # INFO refused: taken as a standalone server
            return
        except rexc.RedisError as exc:
            raise self._translate(exc, "INFO") from exc
        self._detect = None
        if "cluster_enabled:1" not in _text(reply):
            return
        try:
            cluster = detect()
        except rexc.RedisClusterException as exc:
            raise BackendError(
                "REDIS_URL is a Redis Cluster node, and a cluster has only database 0: "
                "end REDIS_URL in /0"
            ) from exc
        log.info("Redis Cluster detected: keys are routed by slot, walks cover every primary")
        await self._client.aclose()
        self._use_cluster(cluster)

    def _use_cluster(self, cluster: RedisCluster) -> None:
        cluster.set_response_callback("INFO", _raw_reply)
        self._cluster = cluster
        self._detect = None

    async def _topology(self, *, fresh: bool = False) -> clusters.Topology:
        """The cluster's primaries: asked once per tool call (CLUSTER SLOTS, counted),
        or again when ``fresh``."""
        cluster = self._cluster
        assert cluster is not None
        current = _meter.get()
        if not fresh and current is not None and current.topology is not None:
            return current.topology
        try:
            await cluster.initialize()
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            raise self._translate(exc, "CLUSTER SLOTS") from exc
        asked = [cluster.get_default_node(), *cluster.get_primaries(), *cluster.get_replicas()]
        failure: BackendError | None = None
        for node in dict.fromkeys(n for n in asked if n is not None):
            try:
                reply = await self._on_node(node, ("CLUSTER", "SLOTS"))
            except (RedisUnavailable, RedisTimeout) as exc:
                failure = exc
                continue
            view = clusters.topology(reply, node.host)
            if current is not None:
                current.topology = view
            return view
        raise failure or RedisUnavailable("cannot reach Redis: no cluster node answered")

    async def _shard_node(self, shard: clusters.Shard) -> ClusterNode:
        cluster = self._cluster
        assert cluster is not None
        node = cluster.get_node(host=shard.host, port=shard.port)
        if node is None:
            # A primary the client has not met yet (a failover, a node added).
            try:
                await cluster.nodes_manager.initialize()
            except (rexc.RedisError, rexc.RedisClusterException) as exc:
                raise self._translate(exc, "CLUSTER SLOTS") from exc
            node = cluster.get_node(host=shard.host, port=shard.port)
        if node is None:
            raise RedisUnavailable(
                "the cluster's nodes are changing (a failover in progress?); try again shortly"
            )
        return node

    async def _on_shard(self, shard: clusters.Shard, *args: Any) -> Any:
        return await self._on_node(await self._shard_node(shard), args)

    async def _on_node(
        self,
        node: ClusterNode | None,
        args: Sequence[Any],
        *,
        reserve: int = 0,
        release: bool = False,
        counted: bool = False,
    ) -> Any:
        """One command to one cluster node (``None``: the client's default node)."""
        cluster = self._cluster
        assert cluster is not None
        if not counted:
            _count(1, args, reserve=reserve, release=release)
        try:
            if node is None:
                await cluster.initialize()
                node = cluster.get_default_node()
            return await node.execute_command(*args)
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            if isinstance(exc, (rexc.ConnectionError, rexc.TimeoutError)):
                # Let the client find the cluster's nodes again on its next command.
                cluster.replace_default_node()
                with contextlib.suppress(rexc.RedisError, rexc.RedisClusterException):
                    await cluster.nodes_manager.initialize()
            raise self._translate(exc, _command_label(args)) from exc

    async def _each(self, *args: Any, reserve: int = 0, release: bool = False) -> list[OnNode[Any]]:
        """One command on every primary of a Redis Cluster (each counts), or on the one
        server: the replies, each with the node that gave it."""
        await self._ready()
        if self._cluster is None:
            return [OnNode(None, None, await self._call(*args, reserve=reserve, release=release))]
        _require_offered(self.managed, args)
        view = await self._topology()
        _count(len(view.shards), *([args] * len(view.shards)), reserve=reserve, release=release)
        nodes = [await self._shard_node(shard) for shard in view.shards]
        replies: list[Any] = [None] * len(nodes)
        failures: list[BackendError] = []

        async def one(index: int) -> None:
            try:
                replies[index] = await self._on_node(nodes[index], args, counted=True)
            except BackendError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as group:
            for index in range(len(nodes)):
                group.start_soon(one, index)
        if failures:
            # Raised as itself, not in an exception group: callers catch RedisRefused.
            raise failures[0]
        return [
            OnNode(shard.label, shard.address, reply)
            for shard, reply in zip(view.shards, replies, strict=True)
        ]

    async def _pipeline(
        self, commands: Sequence[Command], optional: set[int] | None = None
    ) -> list[Any]:
        """Send commands in one round trip. A failed command fails the call, unless its
        index is in ``optional``: then its reply is ``None``. An optional command the
        managed provider lacks is not sent, and its reply is ``None``."""
        skipped = {i for i, command in enumerate(commands) if not offered(self.managed, command)}
        for index in sorted(skipped - (optional or set())):
            raise NotOffered(_command_label(commands[index]), _PROVIDERS[self.managed or ""])
        sent = [command for i, command in enumerate(commands) if i not in skipped]
        await self._ready()
        _count(len(sent), *sent)
        try:
            if self._cluster is not None:
                answered = iter(await self._cluster_pipeline(self._cluster, sent))
            else:
                answered = iter(await self._standalone_pipeline(sent) if sent else [])
        except (rexc.RedisError, rexc.RedisClusterException) as exc:
            raise self._translate(exc, "pipeline") from exc
        replies = [None if i in skipped else next(answered) for i in range(len(commands))]
        out: list[Any] = []
        for index, reply in enumerate(replies):
            if index in skipped:
                out.append(None)
                continue
            if isinstance(reply, rexc.RedisError):
                if optional and index in optional:
                    log.debug("optional command failed: %s", type(reply).__name__)
                    out.append(None)
                    continue
                raise self._translate(reply, str(commands[index][0])) from reply
            out.append(reply)
        return out

    async def _standalone_pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """The commands in one write on one pooled connection, each reply parsed as
        redis-py parses it, a failed command's error returned in its place. What
        redis-py's ``Pipeline`` does, without its per-call bookkeeping (a pipeline
        object, HIMPORT preparation, metrics hooks, reset), which cost a quarter of
        ``get``'s round trip. Tried again once after a dropped connection, under the
        client's own ``Retry``, as the pipeline was."""
        client = self._client
        pool = client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        callbacks = client.response_callbacks

        async def attempt() -> list[Any]:
            await conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            # One deadline for all the replies, as the connection's socket timeout
            # would give each read (an asyncio timeout per reply costs more than
            # parsing a small one); math.inf turns that per-read timeout off.
            try:
                async with asyncio.timeout(self._timeout):
                    for command in commands:
                        try:
                            reply = await conn.read_response(timeout=math.inf)
                        except rexc.ResponseError as exc:
                            replies.append(exc)
                            continue
                        callback = callbacks.get(cast(str, command[0]))
                        if callback is not None:
                            reply = callback(reply)
                            if inspect.isawaitable(reply):
                                reply = await reply
                        replies.append(reply)
            except TimeoutError:
                # What the socket timeout raises: the client's Retry knows it.
                raise rexc.TimeoutError("Timeout reading from Redis") from None
            return replies

        try:
            return cast(
                list[Any], await conn.retry.call_with_retry(attempt, lambda _: conn.disconnect())
            )
        except BaseException:
            # Replies may be left unread on the socket: it must not be reused.
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)

    async def _cluster_pipeline(
        self, cluster: RedisCluster, commands: Sequence[Command]
    ) -> list[Any]:
        """A pipeline on a Redis Cluster: each command goes to the primary of its key's
        slot (keyless ones to the default node), and the replies come back in order.
        MOVED and ASK are followed by redis-py, command by command."""
        if not commands:
            return []
        await cluster.initialize()
        default = cluster.get_default_node()
        pipe = cluster.pipeline()
        for command in commands:
            if _keyed(command):
                pipe.execute_command(*command)
            else:
                pipe.execute_command(*command, target_nodes=default)
        return list(await pipe.execute(raise_on_error=False))

    def _translate(
        self, exc: rexc.RedisError | rexc.RedisClusterException, command: str
    ) -> BackendError:
        """A message safe for a model: no address, no password, no server internals."""
        if isinstance(exc, rexc.RedisClusterException):
            # redis-py's text quotes the command (keys, values): only the kind goes on.
            return BackendError(
                f"Redis Cluster could not serve {command} ({type(exc).__name__}): "
                "its slots may be moving or uncovered; try again shortly"
            )
        if isinstance(exc, rexc.TimeoutError):
            return RedisTimeout(f"Redis did not answer {command} within {self._timeout:g} s")
        if isinstance(exc, rexc.BusyLoadingError):
            return RedisRefused("LOADING", "Redis is loading its dataset; try again shortly")
        if isinstance(exc, rexc.AuthenticationError):
            return RedisUnavailable(
                "Redis refused the credentials (check the user and password in REDIS_URL)"
            )
        if isinstance(exc, MasterNotFoundError):
            return RedisUnavailable(_no_primary(exc, self._client.connection_pool))
        if isinstance(exc, rexc.ConnectionError):
            return RedisUnavailable(f"cannot reach Redis: {_connection_reason(exc)}")
        for kind, code in _CLUSTER_CODES:
            # Their text names a node's address: only the code goes on.
            if isinstance(exc, kind):
                return RedisRefused(
                    code,
                    f"Redis Cluster answered {code} to {command}: its slots are moving or a "
                    "failover is under way; try again shortly",
                )
        if isinstance(exc, rexc.ResponseError):
            text = str(exc).strip()
            code = text.split(" ", 1)[0] if text[:1].isupper() else "ERR"
            if not code.isupper():
                code = "ERR"
            # redis-py strips the code from the errors it has a class for: put it back.
            for kind, stripped in _STRIPPED_CODES:
                if isinstance(exc, kind):
                    code, text = stripped, f"{stripped} {text}"
                    break
            return RedisRefused(code, f"Redis refused {command}: {_shorten(text)}")
        return BackendError(f"Redis error on {command}: {type(exc).__name__}")


# The code of an error redis-py annotates as "Command # 1 (...) of pipeline caused error:
# ('NOPERM ...',)".
_QUEUED_ERROR_CODE = re.compile(r"caused error: \(['\"]([A-Z]+)\b")
_QUEUED_COMMAND_NUMBER = re.compile(r"^Command # (\d+) ")

_CLUSTER_CODES: tuple[tuple[type[rexc.ResponseError], str], ...] = (
    (rexc.MovedError, "MOVED"),
    (rexc.AskError, "ASK"),
    (rexc.TryAgainError, "TRYAGAIN"),
    (rexc.ClusterDownError, "CLUSTERDOWN"),
)

_STRIPPED_CODES: tuple[tuple[type[rexc.ResponseError], str], ...] = (
    (rexc.NoPermissionError, "NOPERM"),
    (rexc.ReadOnlyError, "READONLY"),
    (rexc.OutOfMemoryError, "OOM"),
    (rexc.NoScriptError, "NOSCRIPT"),
    (rexc.ExecAbortError, "EXECABORT"),
    (rexc.MasterDownError, "MASTERDOWN"),
)

_LENGTH_COMMANDS = {
    "string": "STRLEN",
    "hash": "HLEN",
    "list": "LLEN",
    "set": "SCARD",
    "zset": "ZCARD",
    "stream": "XLEN",
}


def _keyed(command: Sequence[Any]) -> bool:
    """Whether ``command`` names a key (and so a Redis Cluster routes it by slot)."""
    return _text(command[0]).upper() in _KEY_ARGUMENTS


def _scan_cursor(cursor: int) -> int:
    """A standalone SCAN cursor: 64 bits (a wider one belongs to a cluster walk)."""
    if not 0 <= cursor <= clusters.MAX_NODE_CURSOR:
        raise InvalidInput("the cursor is out of range: pass back next_cursor exactly as returned")
    return cursor


def _config_value(reply: Any) -> str | None:
    """The value of a one-parameter CONFIG GET reply (a map in RESP3, pairs in RESP2)."""
    values = list(reply.values()) if isinstance(reply, dict) else list(reply)[1::2]
    return _text(values[0]) if values else None


def _restore_ttl(pttl: int) -> int:
    """RESTORE's TTL for a recorded PTTL: 0 is "no expiry" to RESTORE, -1 to PTTL."""
    return 0 if pttl < 0 else max(pttl, 1)


def _raw_reply(response: Any, **_options: Any) -> Any:
    return response


def _count(n: int, *commands: Sequence[Any], reserve: int = 0, release: bool = False) -> None:
    """Count ``n`` commands about to be sent, or raise ``BudgetExceeded`` before they
    are. ``reserve``: also hold that many for a clean-up to come; ``release``: this is
    that clean-up, sent whatever the budget says."""
    current = _meter.get()
    if current is None:
        return
    if release:
        current.reserved = max(0, current.reserved - n)
    elif (
        current.budget is not None
        and current.commands + current.reserved + n + reserve > current.budget
    ):
        raise BudgetExceeded(current.budget, current.commands)
    current.commands += n
    current.reserved += reserve
    for command in commands:
        current.touch(command)


# Commands a managed Redis lacks, never sent in its --managed mode. Upstash: its
# compatibility list names none of these, and its CONFIG exposes only
# notify-keyspace-events (upstash.com/docs/redis/overall/rediscompatibility).
_LACKS: dict[str, frozenset[str]] = {
    "upstash": frozenset({"OBJECT", "MEMORY", "SLOWLOG", "LATENCY", "CLIENT", "DEBUG"}),
}
_PROVIDERS = {"upstash": "Upstash", "": "this server"}
_SUBCOMMANDS = {"CONFIG", "OBJECT", "MEMORY", "SLOWLOG", "LATENCY", "CLIENT", "ACL", "CLUSTER"}


def set_command(
    key: bytes, value: bytes, *, px: int | None, keep_ttl: bool, nx: bool, xx: bool
) -> Command:
    """SET ``key`` ``value`` with its options: PX milliseconds, KEEPTTL, NX, XX."""
    args: list[Any] = ["SET", key, value]
    if px is not None:
        args += ["PX", px]
    if keep_ttl:
        args.append("KEEPTTL")
    if nx:
        args.append("NX")
    if xx:
        args.append("XX")
    return tuple(args)


def offered(managed: str | None, command: Sequence[Any]) -> bool:
    """Whether ``command`` is sent in the ``managed`` mode (always, without one)."""
    if managed is None:
        return True
    name = _text(command[0]).upper()
    if name == "CONFIG":
        return len(command) > 2 and _text(command[2]).lower() == "notify-keyspace-events"
    return name not in _LACKS[managed]


def _require_offered(managed: str | None, command: Sequence[Any]) -> None:
    if not offered(managed, command):
        raise NotOffered(_command_label(command), _PROVIDERS[managed or ""])


def _command_label(command: Sequence[Any]) -> str:
    words = [_text(w).upper() for w in command[:2]]
    return " ".join(words) if words[0] in _SUBCOMMANDS and len(words) > 1 else words[0]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _connection_reason(exc: rexc.ConnectionError) -> str:
    # redis-py's text is "Error 111 connecting to host:port. Connect call failed (...)".
    if isinstance(exc.__cause__ or exc.__context__, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).lower()
    for needle, reason in (
        ("refused", "connection refused"),
        ("previous master", "the primary was demoted by a failover; try again"),
        ("certificate", "TLS certificate verification failed"),
        ("ssl", "TLS handshake failed"),
        ("name or service", "host name not found"),
        ("nodename", "host name not found"),
        ("max number of clients", "the server has reached maxclients"),
        ("timeout", "connection timed out"),
        ("timed out", "connection timed out"),
        ("no such file", "unix socket not found"),
    ):
        if needle in text:
            return reason
    return "connection lost"


# -- Sentinel ---------------------------------------------------------------------------

# How often, at most, the Sentinels are asked again which server is the primary as a
# connection is taken from the pool. redis-py asks only when it (re)connects, and after a
# planned failover (SENTINEL FAILOVER) the old primary stays writable until Sentinel
# demotes it, up to ten seconds later: a connection still open to it would keep reading
# and writing there, and its writes would be lost.
SENTINEL_RECHECK_SECONDS = 1.0


@dataclass
class SentinelView:
    """What the Sentinels answered about ``master`` (see ``Backend.sentinel_view``)."""

    master: str
    sentinels: int
    answered: int = 0
    # Sentinels naming ``master`` as a healthy primary, and those reporting it down.
    naming: int = 0
    down: int = 0
    # Every name the Sentinels that answered monitor; why the others did not answer.
    monitored: dict[str, None] = field(default_factory=dict)
    problems: dict[str, None] = field(default_factory=dict)


class _FollowingPool(SentinelConnectionPool):
    """Sentinel-managed connections that follow a failover: before handing one out, the
    Sentinels are asked again (at most every ``SENTINEL_RECHECK_SECONDS``) and, when they
    name another primary, the idle connections to the old one are closed. Sentinels that
    do not answer then change nothing: a working session outlives them."""

    _asked = -SENTINEL_RECHECK_SECONDS

    async def get_connection(self, *args: Any, **options: Any) -> Any:
        now = time.monotonic()
        if self.master_address is not None and now - self._asked >= SENTINEL_RECHECK_SECONDS:
            self._asked = now
            try:
                await self.get_master_address()  # type: ignore[no-untyped-call]
            except rexc.RedisError as exc:
                log.debug("the Sentinels were not asked again: %s", type(exc).__name__)
        return await super().get_connection(*args, **options)  # type: ignore[no-untyped-call]


class _SentinelPrimary(aioredis.Redis):
    """The primary's client: closing it closes the connections to the Sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if isinstance(self.connection_pool, SentinelConnectionPool):
            await self.connection_pool.sentinel_manager.aclose()


def _sentinel_client(target: SentinelTarget, options: dict[str, Any]) -> aioredis.Redis:
    """A client of the primary ``target``'s Sentinels name, with the plain client's
    ``options`` (timeouts, retry, TLS) on the data connection; the Sentinels get the
    timeouts and the retry, and credentials of their own. Nothing is sent before the
    first command; the primary is looked up again after each lost connection."""
    for_sentinels = {k: v for k, v in options.items() if k.startswith("socket_") or k == "retry"}
    if target.sentinel_username:
        for_sentinels["username"] = target.sentinel_username
    if target.sentinel_password is not None:
        for_sentinels["password"] = target.sentinel_password.get_secret_value()
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=for_sentinels)  # type: ignore[no-untyped-call]
    data: dict[str, Any] = {**options, "db": target.db, "decode_responses": False}
    if target.username:
        data["username"] = target.username
    if target.password is not None:
        data["password"] = target.password.get_secret_value()
    if target.tls:
        data["ssl"] = True
    client = sentinel.master_for(
        target.master,
        redis_class=_SentinelPrimary,
        connection_pool_class=_FollowingPool,
        **data,
    )
    return cast(aioredis.Redis, client)


def _no_primary(exc: MasterNotFoundError, pool: Any) -> str:
    """MasterNotFoundError in a sentence without its text, which holds every Sentinel's
    address and error."""
    name = str(getattr(pool, "service_name", "?"))
    text = str(exc)
    if text == f"No master found for {name!r}":
        return (
            f"the Sentinels answered but none names a healthy primary '{name}': it is down "
            "and not yet replaced (a failover takes seconds: try again), or they monitor no "
            "such name (`mita-redis-mcp doctor` lists the names they monitor)"
        )
    if "Authentication" in text or "NOAUTH" in text or "WRONGPASS" in text:
        return (
            f"no primary '{name}' found: a Sentinel refused the credentials (check "
            "sentinel_password in REDIS_URL)"
        )
    return (
        f"no primary '{name}' found: no Sentinel that answered names one, and "
        "some or all of them could not be reached"
    )


def _limiter_commands(read: LimiterRead) -> list[Command]:
    key = read.key
    if read.shape == "counter":
        extra: list[Command] = [("GET", key)]
        if read.companion is not None:
            extra += [("GET", read.companion), ("PTTL", read.companion)]
        return extra
    if read.shape == "list_log":
        return [("LRANGE", key, 0, max(0, (read.nth or 0) - 1))]
    after = f"({read.since!r}"
    extra = [
        ("ZCOUNT", key, after, "+inf"),
        ("ZRANGEBYSCORE", key, after, "+inf", "WITHSCORES", "LIMIT", 0, 1),
    ]
    if read.nth is not None:
        extra.append(("ZREVRANGEBYSCORE", key, "+inf", after, "WITHSCORES", "LIMIT", read.nth, 1))
    return extra


def _limiter_state(read: LimiterRead, replies: list[Any]) -> LimiterState:
    type_, pttl, *rest = replies
    if read.shape == "counter":
        companion = rest[1:] if read.companion is not None else [None, None]
        return LimiterState(
            _text(type_),
            int(pttl),
            value=None if rest[0] is None else bytes(rest[0]),
            companion_value=None if companion[0] is None else bytes(companion[0]),
            companion_pttl=None if companion[1] is None else int(companion[1]),
        )
    if read.shape == "list_log":
        entries = tuple(bytes(e) for e in rest[0] or ())
        return LimiterState(_text(type_), int(pttl), entries=entries)
    count, oldest, *nth = rest
    return LimiterState(
        _text(type_),
        int(pttl),
        count=None if count is None else int(count),
        oldest=_first_score(oldest),
        nth=_first_score(nth[0]) if nth else None,
    )


def _first_score(reply: Any) -> float | None:
    """The score of the first pair of a WITHSCORES reply (flat in RESP2, pairs in RESP3)."""
    if not reply:
        return None
    first = reply[0]
    if isinstance(first, (list, tuple)):
        return float(first[1])
    return float(reply[1])
