"""The security kernel: which keys and key patterns the server may touch.

Pure: no I/O, no Redis. Everything a tool sends to Redis that names a key or a key
pattern is built here, from bytes, so the rules hold for any byte a key can hold.

Rules:

- A key is in scope when it starts with one of the allowed prefixes (byte for byte,
  case-sensitive), or when the whole keyspace was explicitly allowed.
- A SCAN pattern is parsed with Redis's own glob rules (``*``, ``?``, ``[...]`` with
  ``^`` and ranges, ``\\`` escapes). The MATCH sent to Redis always begins with an
  allowed prefix written as literal bytes (glob characters inside the prefix escaped),
  so Redis itself cannot return a key outside it; every key that comes back is checked
  again with ``ScanPlan.accepts``.
- Patterns Redis would read differently from a careful reader are refused rather than
  guessed at: an unterminated ``[``, a trailing lone ``\\``, non-ASCII range ends.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from mita_redis_mcp.errors import InvalidInput, OutOfScope

MAX_KEY_BYTES = 4096
MAX_PATTERN_BYTES = 512
# Redis's glob matcher backtracks on every '*'; many of them make SCAN MATCH slow
# enough to stall the server (CVE-2022-36021 was this). A handful is plenty.
MAX_PATTERN_STARS = 8

KeyEncoding = Literal["utf8", "base64"]

_GLOB_SPECIAL = b"*?[]\\"
_CLASS_SPECIAL = b"]\\-^["


@dataclass(frozen=True)
class _Star:
    pass


@dataclass(frozen=True)
class _AnyByte:
    pass


@dataclass(frozen=True)
class _Literal:
    data: bytes


@dataclass(frozen=True)
class _Class:
    negated: bool
    members: frozenset[int]


_Token = _Star | _AnyByte | _Literal | _Class
_STAR = _Star()


@dataclass(frozen=True)
class Pattern:
    """A parsed Redis glob pattern."""

    tokens: tuple[_Token, ...]

    @property
    def literal_head(self) -> bytes:
        """The bytes every matching key must start with."""
        head = bytearray()
        for token in self.tokens:
            if not isinstance(token, _Literal):
                break
            head += token.data
        return bytes(head)

    def after_head(self) -> tuple[_Token, ...]:
        """The tokens that follow the literal head."""
        for index, token in enumerate(self.tokens):
            if not isinstance(token, _Literal):
                return self.tokens[index:]
        return ()

    def to_redis(self) -> bytes:
        """The pattern in canonical Redis glob syntax (every literal escaped)."""
        return b"".join(_serialize(token) for token in self.tokens)

    def matches(self, key: bytes) -> bool:
        """Whether Redis's glob matcher would match ``key``. Linear-time in practice."""
        items: list[_Token | int] = []
        for token in self.tokens:
            if isinstance(token, _Literal):
                items.extend(token.data)
            else:
                items.append(token)
        return _glob_match(items, key)


@dataclass(frozen=True)
class ScanPlan:
    """One SCAN walk that stays inside one allowed prefix."""

    prefix: bytes
    match: bytes
    pattern: Pattern
    # True when every key Redis returns for ``match`` is wanted; otherwise the walk
    # scans the whole prefix and ``accepts`` filters by the user's pattern.
    exact: bool

    def accepts(self, key: bytes) -> bool:
        """Whether a key SCAN returned is in this plan's prefix and the user's pattern."""
        if not key.startswith(self.prefix):
            return False
        return self.exact or self.pattern.matches(key)

    def select(self, keys: Sequence[bytes]) -> list[bytes]:
        """The keys of a SCAN page that ``accepts`` takes, in order."""
        prefix = self.prefix
        if self.exact:
            return [key for key in keys if key.startswith(prefix)]
        matches = self.pattern.matches
        return [key for key in keys if key.startswith(prefix) and matches(key)]


class Scope:
    """The allowed prefixes, and every check that keeps keys inside them."""

    def __init__(self, prefixes: Iterable[str | bytes], *, allow_all_keys: bool = False) -> None:
        raw = {p.encode() if isinstance(p, str) else bytes(p) for p in prefixes}
        if b"" in raw:
            raise ValueError("an empty prefix would allow every key: use allow_all_keys")
        if allow_all_keys:
            raw = {b""}
        # A prefix covered by a shorter one adds nothing and would list keys twice.
        self.prefixes: tuple[bytes, ...] = tuple(
            sorted(p for p in raw if not any(o != p and p.startswith(o) for o in raw))
        )
        if not self.prefixes:
            raise ValueError("a scope needs at least one prefix")
        self.allow_all_keys = allow_all_keys

    def describe(self) -> str:
        """The prefixes, readable, for messages."""
        if self.allow_all_keys:
            return "the whole keyspace"
        return ", ".join(_show(p) for p in self.prefixes)

    def contains(self, key: bytes) -> bool:
        # One call over the tuple: a walk asks this of every key it finds.
        return key.startswith(self.prefixes)

    def within(self, keys: Sequence[bytes]) -> list[bytes]:
        """The keys that ``contains`` allows, in order (a page at a time)."""
        prefixes = self.prefixes
        return [key for key in keys if key.startswith(prefixes)]

    def check_key(self, key: bytes) -> bytes:
        """Return ``key`` if it may be touched; raise ``InvalidInput``/``OutOfScope``."""
        if not key:
            raise InvalidInput("the key is empty")
        if len(key) > MAX_KEY_BYTES:
            raise InvalidInput(f"the key is {len(key)} bytes long; at most {MAX_KEY_BYTES}")
        if not self.contains(key):
            raise OutOfScope(
                f"key {_show(key)} is outside the allowed prefixes ({self.describe()}); "
                "nothing was sent to Redis"
            )
        return key

    def check_keys(self, keys: Sequence[bytes]) -> list[bytes]:
        """Check every key before any is used: one bad key refuses the whole call."""
        return [self.check_key(key) for key in keys]

    def plan_scan(self, pattern: bytes) -> list[ScanPlan]:
        """The SCAN walks that find the in-scope keys matching ``pattern``.

        Raises ``InvalidInput`` for a malformed pattern and ``OutOfScope`` when the
        pattern cannot match any key in any allowed prefix.
        """
        parsed = parse_pattern(pattern)
        head = parsed.literal_head
        plans: list[ScanPlan] = []
        for prefix in self.prefixes:
            if head.startswith(prefix):
                # Every key the pattern matches already lies inside this prefix.
                return [ScanPlan(prefix, parsed.to_redis(), parsed, exact=True)]
            rest = parsed.after_head()
            # A pattern with no wildcard after its head names one key, shorter than
            # this prefix: it cannot lie inside it.
            if prefix.startswith(head) and rest:
                plans.append(
                    ScanPlan(
                        prefix,
                        escape_glob(prefix) + b"*",
                        parsed,
                        exact=all(isinstance(t, _Star) for t in rest),
                    )
                )
        if not plans:
            raise OutOfScope(
                f"pattern {_show(pattern)} cannot match a key in the allowed prefixes "
                f"({self.describe()}); start it with one of them"
            )
        return plans


def parse_pattern(pattern: bytes) -> Pattern:
    """Parse a Redis glob. Raise ``InvalidInput`` where Redis's reading is ambiguous."""
    if not pattern:
        raise InvalidInput("the pattern is empty; use '*' for every key in scope")
    if len(pattern) > MAX_PATTERN_BYTES:
        raise InvalidInput(f"the pattern is {len(pattern)} bytes long; at most {MAX_PATTERN_BYTES}")
    tokens: list[_Token] = []
    literal = bytearray()

    def flush() -> None:
        if literal:
            tokens.append(_Literal(bytes(literal)))
            literal.clear()

    i, n, stars = 0, len(pattern), 0
    while i < n:
        c = pattern[i]
        if c == ord("*"):
            flush()
            if not (tokens and isinstance(tokens[-1], _Star)):
                stars += 1
                tokens.append(_STAR)
            i += 1
        elif c == ord("?"):
            flush()
            tokens.append(_AnyByte())
            i += 1
        elif c == ord("\\"):
            if i + 1 >= n:
                raise InvalidInput(
                    "the pattern ends with a lone backslash; write \\\\ for a literal one"
                )
            literal.append(pattern[i + 1])
            i += 2
        elif c == ord("["):
            flush()
            cls, i = _parse_class(pattern, i + 1)
            tokens.append(cls)
        else:
            literal.append(c)
            i += 1
    flush()
    if stars > MAX_PATTERN_STARS:
        raise InvalidInput(
            f"the pattern has {stars} '*' wildcards; at most {MAX_PATTERN_STARS} "
            "(many wildcards make Redis's matcher slow enough to stall the server)"
        )
    return Pattern(tuple(tokens))


def escape_glob(data: bytes) -> bytes:
    """Escape every glob character so Redis matches ``data`` literally."""
    out = bytearray()
    for byte in data:
        if byte in _GLOB_SPECIAL:
            out.append(ord("\\"))
        out.append(byte)
    return bytes(out)


def key_from_text(key: str, encoding: KeyEncoding = "utf8") -> bytes:
    """Turn a key as a tool received it (UTF-8 text or base64) into the bytes Redis holds."""
    if encoding == "base64":
        try:
            return base64.b64decode(key.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise InvalidInput("key_encoding is 'base64' but the key is not valid base64") from None
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            "the key is not valid Unicode text; pass a binary key base64-encoded "
            "with key_encoding='base64'"
        ) from None


def pattern_from_text(pattern: str) -> bytes:
    """A pattern as a tool received it, as bytes."""
    try:
        return pattern.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("the pattern is not valid Unicode text") from None


def _parse_class(pattern: bytes, i: int) -> tuple[_Class, int]:
    """Parse after '[' the way Redis's stringmatchlen does; return the class and the
    index after its ']'."""
    n = len(pattern)
    negated = i < n and pattern[i] == ord("^")
    if negated:
        i += 1
    members: set[int] = set()
    while i < n:
        c = pattern[i]
        if c == ord("\\") and i + 1 < n:
            members.add(pattern[i + 1])
            i += 2
        elif c == ord("]"):
            return _Class(negated, frozenset(members)), i + 1
        elif i + 2 < n and pattern[i + 1] == ord("-"):
            start, end = c, pattern[i + 2]
            if start > 0x7F or end > 0x7F:
                raise InvalidInput("a [a-z] range in the pattern must have ASCII ends")
            if start > end:
                start, end = end, start
            members.update(range(start, end + 1))
            i += 3
        else:
            members.add(c)
            i += 1
    raise InvalidInput("the pattern has a '[' without its closing ']'")


def _serialize(token: _Token) -> bytes:
    if isinstance(token, _Star):
        return b"*"
    if isinstance(token, _AnyByte):
        return b"?"
    if isinstance(token, _Literal):
        return escape_glob(token.data)
    body = bytearray(b"[^" if token.negated else b"[")
    for byte in sorted(token.members):
        if byte in _CLASS_SPECIAL:
            body.append(ord("\\"))
        body.append(byte)
    return bytes(body + b"]")


def _accepts(item: _Token | int, byte: int) -> bool:
    if isinstance(item, int):
        return item == byte
    if isinstance(item, _AnyByte):
        return True
    if isinstance(item, _Class):
        return (byte in item.members) != item.negated
    return False


def _glob_match(items: list[_Token | int], key: bytes) -> bool:
    """Wildcard matching with single-byte items: backtracks only to the last '*'."""
    p = i = 0
    star_p, star_i = -1, 0
    while i < len(key):
        if p < len(items) and isinstance(items[p], _Star):
            star_p, star_i = p, i
            p += 1
        elif p < len(items) and _accepts(items[p], key[i]):
            p += 1
            i += 1
        elif star_p >= 0:
            star_i += 1
            p, i = star_p + 1, star_i
        else:
            return False
    while p < len(items) and isinstance(items[p], _Star):
        p += 1
    return p == len(items)


def _show(data: bytes, limit: int = 80) -> str:
    """A key or pattern for a message: printable, quoted, short."""
    text = repr(data[:limit].decode("utf-8", "backslashreplace"))
    return text + ("..." if len(data) > limit else "")
