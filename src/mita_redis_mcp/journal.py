"""The undo journal: the prior state of every key a write tool changes, kept on this
machine so that ``undo`` can put it back.

Where: ``--journal`` (``MITA_REDIS_MCP_JOURNAL``); by default
``$XDG_STATE_HOME/mita-redis-mcp/journal.jsonl``, else
``~/.local/state/mita-redis-mcp/journal.jsonl``. The file is created with mode 0600 (and
its directory, when this creates it, 0700), opened without following a symlink, and
tightened to 0600 if found looser. In demo mode the journal is kept in memory.

What: JSON lines, bytes in base64. A *change* is one write tool call; its lines share
an id:

- ``{"kind": "before", "change": id, "time": t, "tool": "delete", "key": b64,
  "type": "hash", "pttl": -1, "dump": b64 or null}``: one per key, written before the
  write (``dump`` is Redis's DUMP; null: the key was absent);
- ``{"kind": "done", "change": id, "after": {b64 key: fingerprint} or null}``: written
  after it; ``after`` null means every key is absent after the write (a delete);
  ``"void": true`` means nothing was written (``set`` with only_if_absent/exists);
- ``{"kind": "undone", "change": id}``: ``undo`` restored it.

A fingerprint is a digest of a key's DUMP (value and type) or ``"absent"``.

Bounded: beyond ``--journal-max-bytes`` (default 64 MiB) the oldest changes are
dropped, whole. One change may use at most half of that: a write whose prior state
needs more (a huge key) is refused before anything is written, never done without undo.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mita_redis_mcp.backend import Backend
from mita_redis_mcp.config import Settings
from mita_redis_mcp.errors import MitaRedisMcpError

log = logging.getLogger(__name__)

ABSENT = "absent"
DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


class JournalRefused(MitaRedisMcpError):
    """The prior state cannot be journaled (too big, or the journal cannot be written):
    the write is refused rather than done without undo."""


def default_path(environ: dict[str, str] | None = None) -> Path:
    """$XDG_STATE_HOME/mita-redis-mcp/journal.jsonl, else ~/.local/state/..."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME", "")
    # The XDG spec: a relative value is invalid and must be ignored.
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local/state"
    return base / "mita-redis-mcp" / "journal.jsonl"


def fingerprint(dump: bytes | None) -> str:
    """A key's state as the journal compares it: a digest of its DUMP, or ``absent``."""
    return ABSENT if dump is None else hashlib.sha256(dump).hexdigest()[:32]


@dataclass(frozen=True)
class Prior:
    """One key's state just before a write."""

    key: bytes
    type: str
    pttl: int
    dump: bytes | None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.dump)


@dataclass
class Change:
    """One write tool call, as the journal holds it."""

    id: str
    tool: str
    time: float
    priors: list[Prior] = field(default_factory=list)
    size: int = 0
    done: bool = False
    void: bool = False
    # None once done: every key is absent after the write.
    after: dict[bytes, str] | None = None
    undone: bool = False

    def expected_after(self, key: bytes) -> str | None:
        """The key's fingerprint right after the write; ``None`` when unknown (the call
        did not finish)."""
        if not self.done:
            return None
        if self.after is None:
            return ABSENT
        return self.after.get(key)


async def snapshot(backend: Backend, keys: Sequence[bytes]) -> list[Prior]:
    """TYPE, PTTL and DUMP of each key (pipelined)."""
    states = await backend.dump_states(keys)
    return [Prior(key, t, p, d) for key, (t, p, d) in zip(keys, states, strict=True)]


class Journal:
    """Appends changes to the journal file (or to memory) and reads them back."""

    def __init__(self, path: Path | None, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._memory: list[bytes] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Journal:
        if settings.demo:
            return cls(None, settings.journal_max_bytes)
        return cls(settings.journal or default_path(), settings.journal_max_bytes)

    @property
    def change_budget(self) -> int:
        """Most bytes one change may take in the journal."""
        return self.max_bytes // 2

    def describe(self) -> str:
        return "in memory (demo)" if self.path is None else str(self.path)

    # -- writing -----------------------------------------------------------------

    async def record(
        self, backend: Backend, tool: str, keys: Sequence[bytes], change: Change | None = None
    ) -> Change:
        """Journal the current state of ``keys`` before ``tool`` writes them (into
        ``change`` when a call writes in batches). Raises ``JournalRefused`` when the
        change would outgrow its bound: nothing is journaled then, and the caller must
        not write."""
        change = change or Change(secrets.token_hex(6), tool, time.time())
        priors = await snapshot(backend, keys)
        lines = [self._before_line(change, prior) for prior in priors]
        size = sum(len(line) for line in lines)
        if change.size + size > self.change_budget:
            biggest = max(priors, key=lambda p: len(p.dump or b""))
            raise JournalRefused(
                f"the prior state is too big to journal for undo ({change.size + size} "
                f"bytes; one change may use at most {self.change_budget}, half of "
                f"--journal-max-bytes; the largest key's DUMP is {len(biggest.dump or b'')} "
                "bytes): nothing was written. Raise MITA_REDIS_MCP_JOURNAL_MAX_BYTES to "
                "allow it"
            )
        self._append(lines, keep={change.id})
        change.priors += priors
        change.size += size
        return change

    async def commit(
        self, change: Change, backend: Backend | None = None, *, void: bool = False
    ) -> None:
        """Mark ``change`` done. With ``backend``, each key's state after the write is
        fingerprinted (a ``set``); without, every key is absent after it (a delete)."""
        after: dict[str, str] | None = None
        if backend is not None and not void:
            keys = [prior.key for prior in change.priors]
            after = {_b64(p.key): p.fingerprint for p in await snapshot(backend, keys)}
        line: dict[str, Any] = {"kind": "done", "change": change.id, "after": after}
        if void:
            line["void"] = True
        self._append([_encode(line)], keep={change.id})

    def mark_undone(self, change: Change) -> None:
        self._append([_encode({"kind": "undone", "change": change.id})], keep=set())

    # -- reading -----------------------------------------------------------------

    def changes(self) -> list[Change]:
        """Every change the journal holds, oldest first."""
        found: dict[str, Change] = {}
        for line in self._lines():
            try:
                entry = json.loads(line)
                ident = str(entry["change"])
                kind = entry["kind"]
                if kind == "before":
                    dump = entry["dump"]
                    prior = Prior(
                        _unb64(entry["key"]),
                        str(entry["type"]),
                        int(entry["pttl"]),
                        None if dump is None else _unb64(dump),
                    )
                    when = _timestamp(entry["time"])
                    found.setdefault(ident, Change(ident, str(entry["tool"]), when)).priors.append(
                        prior
                    )
                elif ident in found:
                    change = found[ident]
                    if kind == "done":
                        change.done = True
                        change.void = bool(entry.get("void", False))
                        after = entry.get("after")
                        change.after = (
                            None if after is None else {_unb64(k): v for k, v in after.items()}
                        )
                    elif kind == "undone":
                        change.undone = True
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
                # A line torn by a crash mid-write: the rest of the journal still counts.
                log.warning("skipping an unreadable line of the undo journal")
        return list(found.values())

    # -- the file ----------------------------------------------------------------

    def _lines(self) -> list[bytes]:
        if self.path is None:
            return list(self._memory)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise JournalRefused(f"cannot read the undo journal: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as file:
            return [line for line in file.read().splitlines() if line.strip()]

    def _before_line(self, change: Change, prior: Prior) -> bytes:
        return _encode(
            {
                "kind": "before",
                "change": change.id,
                "time": change.time,
                "tool": change.tool,
                "key": _b64(prior.key),
                "type": prior.type,
                "pttl": prior.pttl,
                "dump": None if prior.dump is None else _b64(prior.dump),
            }
        )

    def _append(self, lines: Sequence[bytes], keep: set[str]) -> None:
        data = b"".join(lines)
        if self.path is None:
            self._memory += lines
            if sum(len(line) for line in self._memory) > self.max_bytes:
                self._memory = _trim(self._memory, self.change_budget, keep)
            return
        try:
            size = self._write(data)
            if size > self.max_bytes:
                self._rewrite(_trim(self._lines(), self.change_budget, keep))
        except OSError as exc:
            raise JournalRefused(
                f"cannot write the undo journal ({exc.strerror}; see --journal): the "
                "write was refused"
            ) from exc

    def _open(self, flags: int) -> int:
        assert self.path is not None
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=DIRECTORY_MODE, parents=True)
            os.chmod(directory, DIRECTORY_MODE)
        fd = os.open(self.path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
        return fd

    def _write(self, data: bytes) -> int:
        fd = self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, data)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def _rewrite(self, lines: Iterable[bytes]) -> None:
        assert self.path is not None
        spare = self.path.with_name(self.path.name + ".tmp")
        spare.unlink(missing_ok=True)
        fd = os.open(
            spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
        )
        with os.fdopen(fd, "wb") as file:
            file.write(b"".join(lines))
        os.replace(spare, self.path)


def _trim(lines: list[bytes], budget: int, keep: set[str]) -> list[bytes]:
    """Drop the oldest changes, whole, until the lines fit in ``budget`` (changes in
    ``keep``, being written now, stay)."""
    order: list[str] = []
    sizes: dict[str, int] = {}
    owner: list[str] = []
    for line in lines:
        try:
            ident = str(json.loads(line)["change"])
        except (ValueError, KeyError, TypeError):
            ident = ""
        if ident not in sizes:
            order.append(ident)
            sizes[ident] = 0
        sizes[ident] += len(line)
        owner.append(ident)
    total = sum(sizes.values())
    dropped: set[str] = set()
    for ident in order:
        if total <= budget:
            break
        if ident in keep:
            continue
        dropped.add(ident)
        total -= sizes[ident]
    if dropped:
        log.info("undo journal over its bound: dropped its %d oldest change(s)", len(dropped))
    return [line for line, ident in zip(lines, owner, strict=True) if ident not in dropped]


def _timestamp(value: object) -> float:
    """A change's time, refused (ValueError) when no date can show it."""
    when = float(value)  # type: ignore[arg-type]
    if not 0 <= when < _LATEST:
        raise ValueError("the time of a change is out of range")
    return when


# 9999-12-31: the last second ``datetime`` can show.
_LATEST = 253_402_300_800


def _encode(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    return base64.b64decode(str(text).encode("ascii"), validate=True)
