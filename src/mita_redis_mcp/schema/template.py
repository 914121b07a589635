"""Key templates: ``rate_limit:{endpoint}:client:{client}`` as a parser, a formatter and
a SCAN glob.

A template is literal text with named fields. ``{{`` and ``}}`` stand for literal braces
(``limits`` puts a Cluster hash tag in its keys: ``LIMITS:{{LIMITER/{key_func}...}}``).
Every field matches one or more bytes. A field may carry a regular expression its whole
value must match; that is how ``cache:{md5}`` stays apart from ``cache:query:{md5}`` and
how a field can contain the separator that follows it (``limits``' ``{key_func}`` values
with ``/``, an IPv6 address before ``:``) while the split stays right.

Matching follows a regular expression ``^lit(.+?)lit(.+?)...$``: each field takes the
shortest value for which the rest of the key still matches, backtracking when a later
literal or field regex fails. Unlike ``re`` it cannot be made slow by a hostile key (Redis
keys are written by the app from request data: a path, an ``X-Forwarded-For`` header):
it only tries the places where the next literal occurs, never retries a position that
already failed, and gives up on a key that needs more tries than about a thousand plus
two per byte, reporting it as not matching.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache

from mita_redis_mcp.errors import InvalidInput
from mita_redis_mcp.scope import MAX_PATTERN_STARS, escape_glob

# Each field is a '*' in the SCAN glob; the scope kernel refuses globs with more.
MAX_FIELDS = MAX_PATTERN_STARS
# Keys longer than this are reported as not matching any template rather than split
# (twice the longest URL common servers accept: room for a path or arguments in a key).
MAX_MATCH_BYTES = 16 * 1024
# Candidate splits tried before a key is declared not matching: a real key needs about
# one per field; a field holding dozens of the separator that follows it needs a few
# hundred; only a crafted key (thousands of separators) runs out.
_STEPS_BASE = 1024
_STEPS_PER_BYTE = 2

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_UTF8 = "utf-8"
# Field values are text; bytes that are not UTF-8 survive the round trip to text and
# back as lone surrogates (PEP 383) instead of being lost.
_ERRORS = "surrogateescape"
# A field regex that means the same inside a larger regex as on its own: single
# characters, '.' and character classes, each with at most one greedy quantifier (no
# group, anchor, alternation, lookaround, escape or flag).
_SIMPLE_ATOM = r"\[\^?\]?[^\]\[\\]*\]|\.|[^.^$*+?{}\[\]\\|()]"
_SIMPLE_QUANTIFIER = r"[+*?]|\{\d{1,4}(?:,\d{0,4})?\}"
_SIMPLE_PART = re.compile(rf"({_SIMPLE_ATOM})(?:{_SIMPLE_QUANTIFIER})?")


class _TooManySteps(Exception):
    """The key needs more matching work than its length allows: treat it as no match."""


@dataclass(frozen=True)
class _Field:
    name: str
    regex: re.Pattern[bytes] | None


class KeyTemplate:
    """A key layout with named fields, e.g. ``rate_limit:{endpoint}:client:{client}``.

    ``regex`` maps field names to regular expressions (Python syntax, ``.`` matching any
    byte) that a field's whole value must match. Raises ``ValueError`` with a readable
    message when the pattern or a regex is malformed.
    """

    __slots__ = ("_fields", "_literals", "_regex_source", "pattern")

    def __init__(self, pattern: str, *, regex: Mapping[str, str] | None = None) -> None:
        literals, names = _parse(pattern)
        regex = dict(regex or {})
        unknown = sorted(set(regex) - set(names))
        if unknown:
            raise ValueError(
                f"regex given for {', '.join(unknown)}, which the pattern does not have "
                f"(its fields: {', '.join(names) or 'none'})"
            )
        fields = []
        for name in names:
            source = regex.get(name)
            compiled = None
            if source is not None:
                try:
                    compiled = re.compile(source.encode(_UTF8), re.DOTALL)
                except re.error as exc:
                    raise ValueError(f"the regex of field {name!r} is invalid: {exc}") from None
            fields.append(_Field(name, compiled))
        self.pattern = pattern
        self._literals = tuple(lit.encode(_UTF8) for lit in literals)
        self._fields = tuple(fields)
        self._regex_source = tuple(sorted(regex.items()))

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names, in the order they appear."""
        return tuple(field.name for field in self._fields)

    @property
    def literal_prefix(self) -> bytes:
        """The bytes every matching key starts with (before the first field)."""
        return self._literals[0]

    @property
    def literal_size(self) -> int:
        """How many literal bytes the template fixes: more means more specific."""
        return sum(len(lit) for lit in self._literals)

    def constrained(self, name: str) -> bool:
        """Whether field ``name`` carries a regex."""
        return any(f.name == name and f.regex is not None for f in self._fields)

    def match(self, key: bytes) -> dict[str, str] | None:
        """The field values of ``key``, or None when the key does not have this layout."""
        literals, fields = self._literals, self._fields
        head, tail = literals[0], literals[-1]
        if not fields:
            return {} if key == head else None
        if len(key) > MAX_MATCH_BYTES or not (key.startswith(head) and key.endswith(tail)):
            return None
        try:
            spans = _Splitter(key, literals, fields).split()
        except _TooManySteps:
            return None
        if spans is None:
            return None
        return {
            field.name: key[start:end].decode(_UTF8, _ERRORS)
            for field, (start, end) in zip(fields, spans, strict=True)
        }

    def matches(self, key: bytes) -> bool:
        """Whether ``key`` has this layout: ``match(key) is not None``, faster. The split
        that ends each field at the first occurrence of the literal after it is tried
        first (a real key's usual split); only when it fails does the full search
        decide."""
        literals, fields = self._literals, self._fields
        head, tail = literals[0], literals[-1]
        if not fields:
            return key == head
        if len(key) > MAX_MATCH_BYTES or not (key.startswith(head) and key.endswith(tail)):
            return False
        end = len(key) - len(tail)
        start = len(head)
        for field, literal in zip(fields, literals[1:-1], strict=False):
            at = key.find(literal, start + 1, end)
            if at < 0:
                # Other splits start this field no earlier: none can end it either.
                return False
            if field.regex is not None and field.regex.fullmatch(key, start, at) is None:
                return self.match(key) is not None
            start = at + len(literal)
        last = fields[-1].regex
        if start < end and (last is None or last.fullmatch(key, start, end) is not None):
            return True
        return self.match(key) is not None

    def exact_regex(self) -> bytes | None:
        """A regular expression (bytes, compiled with ``re.DOTALL``) whose ``fullmatch``
        says what ``matches`` says of every key of at most ``MAX_MATCH_BYTES``; None when
        that cannot be promised.

        It can be when every field but the last has a simple regex (``_SIMPLE_PART``s)
        that never matches the first byte of the literal after it: each such field ends
        at that byte, so a key splits one way at most, which ``re`` finds without
        backtracking across fields and ``matches`` without running out of steps.
        """
        parts = [re.escape(self._literals[0])]
        last = len(self._fields) - 1
        for index, (field, literal) in enumerate(
            zip(self._fields, self._literals[1:], strict=True)
        ):
            source = field.regex.pattern if field.regex is not None else None
            if source is None:
                if index < last:
                    return None
                parts.append(b".+")
            else:
                charset = _simple_charset(source)
                if charset is None or (index < last and literal[0] in charset):
                    return None
                parts.append(b"(?:" + source + b")")
            parts.append(re.escape(literal))
        return b"".join(parts)

    def format(self, **values: str) -> bytes:
        """Build the key from every field's value.

        Raises ``ValueError`` when a field is missing or unknown (a programming error)
        and ``InvalidInput`` when a value is empty, fails its field's regex, or would
        make the key read back differently (it contains the text after its field).
        """
        self._check_names(values, require_all=True)
        parts = [self._literals[0]]
        for field, literal in zip(self._fields, self._literals[1:], strict=True):
            parts.append(self._encode(field, values[field.name]))
            parts.append(literal)
        key = b"".join(parts)
        if self.match(key) != values:
            raise InvalidInput(
                f"these values do not make a well-formed {self.pattern!r} key: a value "
                "contains the text that follows its field, so the key would read back "
                "differently"
            )
        return key

    def glob(self, **known: str) -> bytes:
        """A Redis SCAN glob for the keys of this layout.

        Fields given in ``known`` are written literally (escaped), the others are ``*``.
        The glob is looser than the template (it cannot express a field regex): check
        every key SCAN returns with ``match``.
        """
        self._check_names(known, require_all=False)
        parts = [escape_glob(self._literals[0])]
        for field, literal in zip(self._fields, self._literals[1:], strict=True):
            value = known.get(field.name)
            parts.append(b"*" if value is None else escape_glob(self._encode(field, value)))
            parts.append(escape_glob(literal))
        return b"".join(parts)

    def _check_names(self, values: Mapping[str, str], *, require_all: bool) -> None:
        names = self.fields
        unknown = sorted(set(values) - set(names))
        missing = [n for n in names if n not in values] if require_all else []
        if unknown or missing:
            problems = [f"unknown field(s) {', '.join(unknown)}"] if unknown else []
            problems += [f"missing field(s) {', '.join(missing)}"] if missing else []
            raise ValueError(f"{self.pattern!r}: {'; '.join(problems)}")

    @staticmethod
    def _encode(field: _Field, value: str) -> bytes:
        if not value:
            raise InvalidInput(f"field {field.name!r} must not be empty")
        try:
            data = value.encode(_UTF8, _ERRORS)
        except UnicodeEncodeError:
            raise InvalidInput(f"field {field.name!r} is not valid text") from None
        if field.regex is not None and field.regex.fullmatch(data) is None:
            raise InvalidInput(
                f"{value[:80]!r} is not a valid {field.name!r} (expected to match "
                f"{field.regex.pattern.decode(_UTF8, 'replace')!r})"
            )
        return data

    def __repr__(self) -> str:
        return f"KeyTemplate({self.pattern!r})"

    def __str__(self) -> str:
        return self.pattern

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyTemplate):
            return NotImplemented
        return (self.pattern, self._regex_source) == (other.pattern, other._regex_source)

    def __hash__(self) -> int:
        return hash((self.pattern, self._regex_source))


@cache
def _simple_charset(source: bytes) -> frozenset[int] | None:
    """Every byte a simple field regex can match, or None when it is not simple."""
    if not source.isascii():
        return None
    text = source.decode("ascii")
    if not text or re.fullmatch(f"(?:{_SIMPLE_PART.pattern})+", text) is None:
        return None
    found: set[int] = set()
    for part in _SIMPLE_PART.finditer(text):
        atom = part[1]
        if any(pair in atom for pair in ("--", "&&", "||", "~~")):
            return None  # a class that future versions of re may read as a set operation
        single = re.compile(atom.encode("ascii"), re.DOTALL)
        found.update(byte for byte in range(256) if single.fullmatch(bytes((byte,))))
    return frozenset(found)


class _Splitter:
    """One key against one template: finds where each field ends."""

    def __init__(self, key: bytes, literals: tuple[bytes, ...], fields: tuple[_Field, ...]) -> None:
        self.key = key
        self.literals = literals
        self.fields = fields
        self.end = len(key) - len(literals[-1])
        self.failed: set[tuple[int, int]] = set()
        self.steps = _STEPS_BASE + _STEPS_PER_BYTE * len(key)
        bounds = self._bounds()
        self.feasible = bounds is not None
        self.bounds = bounds or []

    def split(self) -> list[tuple[int, int]] | None:
        start = len(self.literals[0])
        if not self.feasible or start >= self.bounds[0]:
            return None
        return self._solve(0, start)

    def _bounds(self) -> list[int] | None:
        """For each field, the last byte index it may end at (ignoring regexes): a field
        must leave room for every later literal and a non-empty value per later field."""
        last = len(self.fields) - 1
        bounds = [0] * len(self.fields)
        bounds[last] = self.end
        for i in range(last - 1, -1, -1):
            literal = self.literals[i + 1]
            # The next field starts after this literal and needs at least one byte.
            at = self.key.rfind(literal, 0, bounds[i + 1] - 1)
            if at < 0:
                return None
            bounds[i] = at
        return bounds

    def _ends(self, i: int, start: int) -> Iterator[int]:
        """Where field ``i`` starting at ``start`` may end: before each occurrence of the
        literal that follows it, shortest first."""
        literal = self.literals[i + 1]
        limit = self.bounds[i] + len(literal)
        at = self.key.find(literal, start + 1, limit)
        while at >= 0:
            yield at
            at = self.key.find(literal, at + 1, limit)

    def _solve(self, i: int, start: int) -> list[tuple[int, int]] | None:
        field = self.fields[i]
        if i == len(self.fields) - 1:
            if start >= self.end or not self._accepts(field, start, self.end):
                return None
            return [(start, self.end)]
        if (i, start) in self.failed:
            return None
        step = len(self.literals[i + 1])
        for end in self._ends(i, start):
            self.steps -= 1
            if self.steps < 0:
                raise _TooManySteps
            if not self._accepts(field, start, end):
                continue
            rest = self._solve(i + 1, end + step)
            if rest is not None:
                return [(start, end), *rest]
        self.failed.add((i, start))
        return None

    def _accepts(self, field: _Field, start: int, end: int) -> bool:
        return field.regex is None or field.regex.fullmatch(self.key, start, end) is not None


def _parse(pattern: str) -> tuple[list[str], list[str]]:
    """Split ``pattern`` into literals and field names: ``len(literals) == len(names) + 1``."""
    if not pattern:
        raise ValueError("the pattern is empty")
    literals: list[str] = []
    names: list[str] = []
    current: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c in "{}" and pattern.startswith(c * 2, i):
            current.append(c)
            i += 2
        elif c == "}":
            raise ValueError(f"unbalanced '}}' at position {i} (write '}}}}' for a literal brace)")
        elif c == "{":
            close = pattern.find("}", i + 1)
            opening = pattern.find("{", i + 1)
            if close < 0 or 0 <= opening < close:
                raise ValueError(
                    f"unbalanced '{{' at position {i} (write '{{{{' for a literal brace)"
                )
            name = pattern[i + 1 : close]
            if not _NAME.match(name):
                raise ValueError(
                    f"field name {name!r} at position {i} is not an identifier "
                    "(letters, digits, '_'; not starting with a digit)"
                )
            if name in names:
                raise ValueError(f"field {{{name}}} appears twice")
            if names and not current:
                raise ValueError(
                    f"fields {{{names[-1]}}} and {{{name}}} are not separated by literal "
                    "text, so no key could say where one ends"
                )
            literals.append("".join(current))
            current = []
            names.append(name)
            i = close + 1
        else:
            current.append(c)
            i += 1
    literals.append("".join(current))
    if len(names) > MAX_FIELDS:
        raise ValueError(f"the pattern has {len(names)} fields; at most {MAX_FIELDS}")
    return literals, names
