"""The audit log: one JSON line per tool call, to stderr or appended to a file.

A line says when (UTC), which tool, the keys it touched, the Redis commands it spent,
how long it took and how it ended; never a value, never an argument. "Touched" means
named as the key of a command the backend sent (``backend.Meter``): a key only listed
by SCAN is not touched, a key read or written is. At most ``MAX_KEYS_LISTED`` keys are
listed, with ``key_count`` giving them all.

Keys are shown as the answers show them: fields a profile marks as credentials are
redacted and personal ones masked (``tools.keyspace.shown_key``); in every key, any run
that looks like a bearer token (25 or more base64url or hex characters with a digit) is
redacted too, so a key no profile knows keeps its shape but not its secret.

Writing never breaks a call: a failed write is logged on stderr once, and the call's
answer goes back as if the log had been written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from mcp.server.mcpserver.exceptions import ToolError

from mita_redis_mcp.backend import Meter
from mita_redis_mcp.config import AuditTarget
from mita_redis_mcp.errors import MitaRedisMcpError
from mita_redis_mcp.redact import redact_credential
from mita_redis_mcp.schema import Profile, classify
from mita_redis_mcp.tools.keyspace import shown_key

log = logging.getLogger(__name__)

MAX_KEYS_LISTED = 20
Outcome = Literal["ok", "refused", "error", "cancelled"]

_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_\-+/=.]{25,}")


class AuditLog:
    """Writes the audit lines of one server to ``target`` ("stderr" or a file)."""

    def __init__(self, target: Literal["stderr"] | Path, profiles: Sequence[Profile]) -> None:
        self.target = target
        self._profiles = tuple(profiles)
        self._failed = False

    @classmethod
    def from_settings(cls, target: AuditTarget, profiles: Sequence[Profile]) -> AuditLog | None:
        return None if target is None else cls(target, profiles)

    def record(
        self,
        *,
        started: datetime,
        tool: str,
        spent: Meter,
        seconds: float,
        outcome: Outcome,
        error: str | None = None,
    ) -> None:
        """Write one line; a failure is logged (once) and otherwise ignored."""
        try:
            self._write(self.line(started, tool, spent, seconds, outcome, error))
        except Exception as exc:  # the log must never break the call it records
            if not self._failed:
                self._failed = True
                log.warning(
                    "audit log: cannot write to %s (%s); tool calls go on unaudited "
                    "until it works again",
                    self.target,
                    type(exc).__name__,
                )

    def line(
        self,
        started: datetime,
        tool: str,
        spent: Meter,
        seconds: float,
        outcome: Outcome,
        error: str | None,
    ) -> str:
        keys = list(spent.keys)
        entry: dict[str, Any] = {
            "time": started.astimezone(UTC).isoformat(timespec="milliseconds"),
            "tool": tool,
            "outcome": outcome,
            "error": error,
            "commands": spent.commands,
            "duration_ms": round(seconds * 1000, 1),
            "keys": [self.shown(key) for key in keys[:MAX_KEYS_LISTED]],
            "key_count": len(keys) + spent.keys_dropped,
        }
        return json.dumps(entry, ensure_ascii=False) + "\n"

    def shown(self, key: bytes) -> str:
        """A key as the log shows it: credential parts redacted, personal ones masked."""
        text = shown_key(classify(self._profiles, key), key)
        return _TOKEN_LIKE.sub(_redact_token, text)

    def _write(self, text: str) -> None:
        if self.target == "stderr":
            sys.stderr.write(text)
            sys.stderr.flush()
            return
        # Opened per line: a rotated or deleted file is recreated, 0600 like the first.
        fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, text.encode("utf-8", "backslashreplace"))
        finally:
            os.close(fd)
        if self._failed:
            self._failed = False
            log.warning("audit log: writing to %s again", self.target)


@contextmanager
def audited(audit: AuditLog | None, tool: str, spent: Meter) -> Iterator[None]:
    """Record the call made inside this block, however it ends: "ok", "refused" (one of
    our errors, the class named), "error" (anything else) or "cancelled"."""
    if audit is None:
        yield
        return
    started, clock = datetime.now(UTC), time.perf_counter()
    outcome: Outcome = "ok"
    error: str | None = None
    try:
        yield
    except Exception as exc:
        # The server turns our errors into ToolError: the cause says which.
        cause = exc.__cause__ if isinstance(exc, ToolError) and exc.__cause__ else exc
        outcome = "refused" if isinstance(cause, MitaRedisMcpError) else "error"
        error = type(cause).__name__
        raise
    except BaseException as exc:
        outcome, error = "cancelled", type(exc).__name__
        raise
    finally:
        audit.record(
            started=started,
            tool=tool,
            spent=spent,
            seconds=time.perf_counter() - clock,
            outcome=outcome,
            error=error,
        )


def _redact_token(match: re.Match[str]) -> str:
    run = match.group(0)
    return redact_credential(run) if any(c.isdigit() for c in run) else run
