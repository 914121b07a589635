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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from mita_redis_mcp.config import Settings
from mita_redis_mcp.errors import (
    BackendError,
    RedisRefused,
    RedisTimeout,
    RedisUnavailable,
)

log = logging.getLogger(__name__)

Command = tuple[bytes | str | int | float, ...]


@dataclass
class Meter:
    """Counts the Redis commands one tool call sends (pipelined ones each count)."""

    commands: int = 0


_meter: ContextVar[Meter | None] = ContextVar("mita_redis_mcp_meter", default=None)


@contextmanager
def meter() -> Iterator[Meter]:
    """Count the commands sent inside this block (Upstash bills each one)."""
    current = Meter()
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


class Backend:
    """Bounded Redis commands over one connection pool."""

    def __init__(self, client: aioredis.Redis, *, timeout: float, demo: bool = False) -> None:
        client.set_response_callback("INFO", _raw_reply)
        self._client = client
        self._timeout = timeout
        self.demo = demo

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
            "client_name": "mita-redis-mcp",
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
        return cls(client, timeout=settings.limits.command_timeout)

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

    async def _call(self, *args: Any) -> Any:
        _count(1)
        try:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        except rexc.RedisError as exc:
            raise self._translate(exc, str(args[0])) from exc

    async def _pipeline(
        self, commands: Sequence[Command], optional: set[int] | None = None
    ) -> list[Any]:
        """Send commands in one round trip. A failed command fails the call, unless its
        index is in ``optional``: then its reply is ``None``."""
        _count(len(commands))
        try:
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except rexc.RedisError as exc:
            raise self._translate(exc, "pipeline") from exc
        out: list[Any] = []
        for index, reply in enumerate(replies):
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


def _raw_reply(response: Any, **_options: Any) -> Any:
    return response


def _count(n: int) -> None:
    current = _meter.get()
    if current is not None:
        current.commands += n


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
