"""The stdio transport: one JSON-RPC message per line on stdin and stdout, read and
written by the event loop's own pipe transports instead of worker threads.

The SDK's transport (``mcp.server.stdio``) reads each line, and writes and flushes
each answer, through ``anyio.to_thread``: three thread hops per request, each a
lock handoff and a wake-up of the loop, which cost more than reading a small key.
``streams()`` yields the same pair the SDK's server loop consumes (``SessionMessage``
in, ``SessionMessage`` out, parse failures as ``Exception`` items), so the protocol,
dispatching, validation and schemas all stay the SDK's.

While serving, fd 0 reads the null device and fd 1 writes to stderr, as with the
SDK's transport: stray output (a library that prints, a child process) cannot
corrupt the protocol, and a child cannot steal its input. Both are put back on exit.
Where the event loop cannot watch the descriptors (stdin or stdout a regular file,
a loop other than asyncio), ``streams()`` falls back to the SDK's transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

import anyio
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from mcp.types import jsonrpc_message_adapter

log = logging.getLogger(__name__)

# The longest message accepted on stdin. A longer line is dropped (as an unparseable
# one is: the loop logs it and goes on), so a runaway client cannot make the server
# buffer without end. The largest legitimate request, `set` of a 1 MiB value written
# as JSON escapes, is well under it.
MAX_MESSAGE_BYTES = 32 * 2**20
# Unread input held before the loop stops reading stdin (the client then blocks).
_HIGH_WATER = 4 * 2**20
# How long the answers still buffered for stdout may take to drain at shutdown.
_FLUSH_SECONDS = 5.0
# A longer answer goes to the pipe in pieces of this size, each after the previous one
# drained: the transport then buffers at most a piece, not a copy of the whole answer.
_WRITE_CHUNK = 2**20


class MessageTooLong(ValueError):
    """A line on stdin longer than ``MAX_MESSAGE_BYTES``: dropped unread."""


class _LineProtocol(asyncio.Protocol):
    """Buffers stdin and hands out complete lines; pauses reading when far ahead."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._searched = 0  # bytes of the buffer already known to hold no newline
        self._discarding = False  # inside a line over the limit, until its newline
        self._eof = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._discarding or len(self._buffer) > self._limit or b"\n" in data:
            self._wake()
        if len(self._buffer) > _HIGH_WATER and b"\n" in self._buffer and not self._paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._paused = True

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _resume(self) -> None:
        if self._paused and self._transport is not None and not self._transport.is_closing():
            self._paused = False
            self._transport.resume_reading()

    async def readline(self) -> bytes | MessageTooLong | None:
        """The next line without its newline; ``MessageTooLong`` for a dropped one;
        ``None`` at the end of input."""
        while True:
            end = self._buffer.find(b"\n", self._searched)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                self._searched = 0
                if len(self._buffer) < _HIGH_WATER:
                    self._resume()
                if self._discarding:
                    self._discarding = False
                    return MessageTooLong(f"a message over {self._limit} bytes was dropped")
                if len(line) > self._limit:
                    return MessageTooLong(f"a message over {self._limit} bytes was dropped")
                return line
            if len(self._buffer) > self._limit:
                self._discarding = True
                self._buffer.clear()
            self._searched = len(self._buffer)
            if self._eof:
                if self._discarding:
                    self._discarding = False
                    return MessageTooLong(f"a message over {self._limit} bytes was dropped")
                if not self._buffer:
                    return None
                line = bytes(self._buffer)  # a last line without its newline
                self._buffer.clear()
                self._searched = 0
                return line
            self._resume()  # no complete line buffered: read on
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class _Closable:
    """A stream half that ``aclose`` (or leaving ``async with``) closes."""

    _closed = False

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _MessageReader(_Closable):
    """The read half: each line of stdin parsed into a ``SessionMessage``."""

    def __init__(self, protocol: _LineProtocol) -> None:
        self._protocol = protocol
        self._closed = False

    async def receive(self) -> SessionMessage | Exception:
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            line = await self._protocol.readline()
            if line is None:
                raise anyio.EndOfStream
            if isinstance(line, Exception):
                return line
            if line.strip():
                break  # blank lines carry nothing: skipped
        try:
            # Bytes that are not UTF-8 read as U+FFFD, as the SDK's transport reads them.
            text = line.decode("utf-8", "replace")
            return SessionMessage(jsonrpc_message_adapter.validate_json(text, by_name=False))
        except Exception as exc:
            return exc

    def __aiter__(self) -> _MessageReader:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class _FlowProtocol(asyncio.Protocol):
    """Stdout's flow control: ``drain`` waits while the pipe is full."""

    def __init__(self) -> None:
        self._paused = False
        self._waiters: list[asyncio.Future[None]] = []
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._release()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._release()

    def _release(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def drain(self) -> None:
        if not self._paused or self.lost.done():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter


class _MessageWriter(_Closable):
    """The write half: each ``SessionMessage`` written to stdout as one line. One line
    is written at a time (a lock), so concurrent answers never interleave."""

    def __init__(self, transport: asyncio.WriteTransport, protocol: _FlowProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False
        self._lock = asyncio.Lock()

    async def send(self, item: SessionMessage, /) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._protocol.lost.done() or self._transport.is_closing():
            raise anyio.BrokenResourceError
        message = item.message
        # Straight to bytes (model_dump_json would build a str first, then a copy of
        # it): a 16 MiB answer is held once, not three times.
        line = type(message).__pydantic_serializer__.to_json(
            message, by_alias=True, exclude_unset=True
        )
        del item, message  # the answer's objects can go while its bytes are written
        async with self._lock:
            if len(line) < _WRITE_CHUNK:
                # One write with its newline: a second one would cost a system call and
                # wake the client for half a line.
                self._transport.write(line + b"\n")
            else:
                view = memoryview(line)
                for start in range(0, len(line), _WRITE_CHUNK):
                    self._transport.write(view[start : start + _WRITE_CHUNK])
                    await self._protocol.drain()
                self._transport.write(b"\n")
            await self._protocol.drain()


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _watchable(fd: int) -> bool:
    """Whether the event loop can watch ``fd``: a pipe, a socket or a terminal. Other
    character devices (``/dev/null``, a client launching the server with no input)
    cannot be polled: epoll refuses them."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))


@asynccontextmanager
async def streams(
    limit: int = MAX_MESSAGE_BYTES,
) -> AsyncIterator[tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]]:
    """The process's stdin and stdout as the SDK's server loop expects them."""
    if sys.platform == "win32" or not (_on_asyncio() and _watchable(0) and _watchable(1)):
        from mcp.server.stdio import stdio_server

        log.debug("stdin/stdout cannot be watched by the event loop: the SDK's transport")
        async with stdio_server() as pair:
            yield pair
        return
    sys.stdout.flush()
    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    diverted = False
    read_transport: asyncio.ReadTransport | None = None
    write_transport: asyncio.WriteTransport | None = None
    flow: _FlowProtocol | None = None
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, 0)
        finally:
            os.close(null)
        os.dup2(2, 1)
        diverted = True
        loop = asyncio.get_running_loop()
        lines = _LineProtocol(limit)
        # closefd=False: the descriptors are closed below, after putting fds 0 and 1 back.
        read_transport, _ = await loop.connect_read_pipe(
            lambda: lines, os.fdopen(wire_in, "rb", buffering=0, closefd=False)
        )
        write_transport, flow = await loop.connect_write_pipe(
            _FlowProtocol,
            os.fdopen(wire_out, "wb", buffering=0, closefd=False),
        )
        yield _MessageReader(lines), _MessageWriter(write_transport, flow)
    finally:
        if read_transport is not None:
            read_transport.close()
        if write_transport is not None and flow is not None:
            write_transport.close()  # writes what is still buffered, then closes
            with anyio.move_on_after(_FLUSH_SECONDS, shield=True):
                await flow.lost
        for fd, wire in ((0, wire_in), (1, wire_out)):
            with contextlib.suppress(OSError):
                os.set_blocking(wire, True)  # the loop made the shared pipe non-blocking
                if diverted:
                    os.dup2(wire, fd)
            with contextlib.suppress(OSError):
                os.close(wire)
