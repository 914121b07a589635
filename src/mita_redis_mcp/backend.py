"""The only module that talks to Redis.

``Backend`` wraps one redis-py asyncio client (or, in demo mode, an in-process fake
server) and offers the bounded commands the tools need, nothing more: there is no
method that sends KEYS, FLUSHDB, FLUSHALL, MONITOR or any unbounded read, so no tool
can reach one. Every command passes through ``_call`` or ``_pipeline``, which count
it (see ``meter``) and translate redis-py's exceptions into ``errors`` whose messages
are safe to show a model.

Keys reaching this module have already been checked by ``scope``: it does not check
them again, it only sends them.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from mita_redis_mcp.config import Managed, Settings
from mita_redis_mcp.errors import (
    BackendError,
    BudgetExceeded,
    NotOffered,
    RedisRefused,
    RedisTimeout,
    RedisUnavailable,
)

log = logging.getLogger(__name__)

Command = tuple[bytes | str | int | float, ...]


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


class Backend:
    """Bounded Redis commands over one connection pool."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        timeout: float,
        demo: bool = False,
        managed: Managed | None = None,
    ) -> None:
        client.set_response_callback("INFO", _raw_reply)
        self._client = client
        self._timeout = timeout
        self.demo = demo
        self.managed = managed

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
        if url.startswith("rediss://"):
            options["ssl_cert_reqs"] = (
                ssl.CERT_NONE if settings.tls_insecure_skip_verify else ssl.CERT_REQUIRED
            )
            options["ssl_check_hostname"] = not settings.tls_insecure_skip_verify
            if settings.tls_ca_file is not None:
                options["ssl_ca_certs"] = str(settings.tls_ca_file)
            if settings.tls_cert_file is not None:
                options["ssl_certfile"] = str(settings.tls_cert_file)
                options["ssl_keyfile"] = str(settings.tls_key_file)
        client = aioredis.Redis.from_url(url, decode_responses=False, **options)
        return cls(client, timeout=settings.limits.command_timeout, managed=settings.managed)

    @classmethod
    def in_memory(cls, *, timeout: float = 5.0) -> Backend:
        """An in-process fake Redis (fakeredis): demo mode, no server needed."""
        import fakeredis

        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=False)
        return cls(cast(aioredis.Redis, client), timeout=timeout, demo=True)

    async def close(self) -> None:
        await self._client.aclose()

    # -- reads ---------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call("PING")

    async def scan(
        self, cursor: int, match: bytes, count: int, type_: str | None = None
    ) -> tuple[int, list[bytes]]:
        args: list[Any] = ["SCAN", cursor, "MATCH", match, "COUNT", count]
        if type_ is not None:
            args += ["TYPE", type_]
        next_cursor, keys = await self._call(*args)
        return int(next_cursor), list(keys)

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
        sections)."""
        if self.demo:
            return await self._demo_info()
        args = ("INFO", section) if section else ("INFO",)
        return _text(await self._call(*args))

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
        Redis such as Upstash, an ACL user without +config) or does not know it."""
        try:
            reply = await self._call("CONFIG", "GET", parameter)
        except RedisRefused:
            return None
        values = list(reply.values()) if isinstance(reply, dict) else list(reply)[1::2]
        return _text(values[0]) if values else None

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

    async def dbsize(self) -> int | None:
        """DBSIZE (keys in the database, in and out of scope: a count, no key); ``None``
        when the server refuses it."""
        try:
            return int(await self._call("DBSIZE"))
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
        return int(self._client.connection_pool.connection_kwargs.get("db", 0) or 0)

    async def slowlog_get(self, count: int) -> list[Any]:
        """SLOWLOG GET ``count`` (raw entries; bounded by ``count``)."""
        return list(await self._call("SLOWLOG", "GET", count))

    async def latency_latest(self) -> list[Any]:
        """LATENCY LATEST: one entry per event that crossed the monitor threshold."""
        return list(await self._call("LATENCY", "LATEST"))

    async def client_list(self) -> str:
        """CLIENT LIST's raw text, one line per connection."""
        return _text(await self._call("CLIENT", "LIST"))

    async def notify_keyspace_events(self) -> str:
        """CONFIG GET notify-keyspace-events (the only CONFIG parameter Upstash has)."""
        reply = await self._call("CONFIG", "GET", "notify-keyspace-events")
        values = list(reply.values()) if isinstance(reply, dict) else list(reply)[1::2]
        return _text(values[0]) if values else ""

    async def set_notify_keyspace_events(self, flags: str, *, restoring: bool = False) -> None:
        """CONFIG SET notify-keyspace-events: a server-wide change, made only by an
        explicit opt-in and always restored by the caller (``restoring``: the command
        budget reserved for it when the change was made, so it is never refused)."""
        args = ("CONFIG", "SET", "notify-keyspace-events", flags)
        if restoring:
            await self._call(*args, release=True)
        else:
            await self._call(*args, reserve=1)

    @asynccontextmanager
    async def key_events(
        self, channel: bytes, on_key: Callable[[bytes], None]
    ) -> AsyncIterator[None]:
        """Subscribe to one keyspace-notification channel for the body's duration and
        pass each event's key to ``on_key``.

        On a normal exit a PING goes down the subscribed connection and events are read
        until its reply: Redis answers in order, so every event published while the body
        ran has been counted (no wait for stragglers). On cancellation or an error the
        listener stops at once. SUBSCRIBE, PING and UNSUBSCRIBE use
        a connection of their own and are counted as commands."""
        pubsub = self._client.pubsub()
        try:
            _count(1, reserve=2)  # PING and UNSUBSCRIBE run whatever the budget says
            try:
                await pubsub.subscribe(channel)
            except rexc.RedisError as exc:
                raise self._translate(exc, "SUBSCRIBE") from exc
            drained = anyio.Event()

            async def listen() -> None:
                while True:
                    message = await pubsub.get_message(timeout=self._timeout)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        on_key(bytes(message["data"]))
                    elif message["type"] == "pong":
                        drained.set()
                        return

            async with anyio.create_task_group() as group:
                group.start_soon(listen)
                try:
                    yield
                except BaseException:
                    # Cancelled or failed: the listener is being cancelled too, so no
                    # PONG would be read; waiting for one would only wait for the timeout.
                    group.cancel_scope.cancel()
                    raise
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                    _count(1, release=True)
                    await pubsub.ping()
                    await drained.wait()
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                _count(1, release=True)
                try:
                    await pubsub.unsubscribe()
                except rexc.RedisError:
                    log.debug("UNSUBSCRIBE failed; the connection is closed instead")
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

    async def restore(self, states: Sequence[tuple[bytes, int, bytes | None]]) -> None:
        """Put keys back as (key, PTTL, DUMP), in one pipeline: RESTORE ... REPLACE with
        the PTTL (0: no expiry), or UNLINK where the DUMP is ``None`` (absent)."""
        commands: list[Command] = [
            ("UNLINK", key)
            if dump is None
            else ("RESTORE", key, _restore_ttl(pttl), dump, "REPLACE")
            for key, pttl, dump in states
        ]
        if commands:
            await self._pipeline(commands)

    # -- writes (the tools call these only when writes are on) -----------------------

    async def set_string(
        self, key: bytes, value: bytes, *, px: int | None, keep_ttl: bool, nx: bool, xx: bool
    ) -> bool:
        args: list[Any] = ["SET", key, value]
        if px is not None:
            args += ["PX", px]
        if keep_ttl:
            args.append("KEEPTTL")
        if nx:
            args.append("NX")
        if xx:
            args.append("XX")
        return bool(await self._call(*args))

    async def unlink(self, keys: Sequence[bytes]) -> int:
        return int(await self._call("UNLINK", *keys))

    async def load(self, commands: Sequence[Command]) -> None:
        """Run prepared write commands (seeding the demo keyspace; never from a tool)."""
        await self._pipeline(commands)

    # -- the one door ------------------------------------------------------------------

    def sends(self, command: Command) -> bool:
        """False for a command this backend never sends (``--managed``: one the
        provider lacks)."""
        return offered(self.managed, command)

    async def _call(self, *args: Any, reserve: int = 0, release: bool = False) -> Any:
        if not offered(self.managed, args):
            raise NotOffered(_command_label(args), _PROVIDERS[self.managed or ""])
        _count(1, args, reserve=reserve, release=release)
        try:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        except rexc.RedisError as exc:
            raise self._translate(exc, str(args[0])) from exc

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
        _count(len(sent), *sent)
        try:
            pipe = self._client.pipeline(transaction=False)
            for command in sent:
                pipe.execute_command(*command)
            answered = iter(await pipe.execute(raise_on_error=False) if sent else [])
        except rexc.RedisError as exc:
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

    def _translate(self, exc: rexc.RedisError, command: str) -> BackendError:
        """A message safe for a model: no address, no password, no server internals."""
        if isinstance(exc, rexc.TimeoutError):
            return RedisTimeout(f"Redis did not answer {command} within {self._timeout:g} s")
        if isinstance(exc, rexc.BusyLoadingError):
            return RedisRefused("LOADING", "Redis is loading its dataset; try again shortly")
        if isinstance(exc, rexc.AuthenticationError):
            return RedisUnavailable(
                "Redis refused the credentials (check the user and password in REDIS_URL)"
            )
        if isinstance(exc, rexc.ConnectionError):
            return RedisUnavailable(f"cannot reach Redis: {_connection_reason(exc)}")
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
_SUBCOMMANDS = {"CONFIG", "OBJECT", "MEMORY", "SLOWLOG", "LATENCY", "CLIENT", "ACL"}


def offered(managed: str | None, command: Sequence[Any]) -> bool:
    """Whether ``command`` is sent in the ``managed`` mode (always, without one)."""
    if managed is None:
        return True
    name = _text(command[0]).upper()
    if name == "CONFIG":
        return len(command) > 2 and _text(command[2]).lower() == "notify-keyspace-events"
    return name not in _LACKS[managed]


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
