"""Mass insertion over a raw socket, as ``redis-cli --pipe`` does: commands are encoded
to RESP by hand and sent in batches, and the one-line replies are counted, not parsed.
Only for commands whose reply is one line (integers, +OK, errors)."""

from __future__ import annotations

import socket

BATCH = 10_000


class RawPipe:
    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._buffer: list[bytes] = []
        self._queued = 0

    def __enter__(self) -> RawPipe:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.flush()
        self._sock.close()

    def add(self, *args: bytes | str | int | float) -> None:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._buffer.append(b"".join(parts))
        self._queued += 1
        if self._queued >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._queued:
            return
        self._sock.sendall(b"".join(self._buffer))
        expected, self._queued, self._buffer = self._queued, 0, []
        replies = b""
        lines = 0
        while lines < expected:
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("redis-server closed the connection while seeding")
            replies += chunk
            lines += chunk.count(b"\r\n")
        errors = [line for line in replies.split(b"\r\n") if line.startswith(b"-")]
        if errors:
            raise RuntimeError(f"seeding failed: {errors[0].decode(errors='replace')}")
        if lines != expected:
            raise RuntimeError(f"seeding: {lines} replies to {expected} commands")
