"""The scope kernel, without Redis: every way out of the allowed prefixes, refused.

Each example test is named after the attack it stops. The property tests check the
kernel's promises over generated prefixes (glob characters and arbitrary bytes
included), patterns and keys: a scan plan finds exactly the in-scope keys the pattern
matches, its MATCH always opens with the prefix as literal bytes, and the parser agrees
with an independent regular-expression model of Redis's glob.

The generators at the top are shared with ``test_scope_redis.py``, where Redis itself
is the oracle.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, reject
from hypothesis import strategies as st

from mita_redis_mcp.errors import InvalidInput, OutOfScope
from mita_redis_mcp.scope import (
    MAX_KEY_BYTES,
    MAX_PATTERN_BYTES,
    MAX_PATTERN_STARS,
    Pattern,
    ScanPlan,
    Scope,
    escape_glob,
    key_from_text,
    parse_pattern,
    pattern_from_text,
)

# -- generators ------------------------------------------------------------------------

# Bytes that mean something to a glob, to RESP or to a terminal, plus the prefix's own
# letters (so generated keys and patterns collide with it), then any byte at all.
TRICKY_BYTES = b"apP:;*?[]\\^-\x00\r\n \x7f\x80\xff"
tricky_byte = st.one_of(st.sampled_from(list(TRICKY_BYTES)), st.integers(0, 255))


def tricky_bytes(min_size: int = 0, max_size: int = 6) -> st.SearchStrategy[bytes]:
    return st.lists(tricky_byte, min_size=min_size, max_size=max_size).map(bytes)


prefix_bytes = tricky_bytes(1, 8)
# Inside [...]: the bytes that close, escape, negate or make a range, and neighbours
# on either side of '-', so a careless writer's range shows up.
class_byte = st.one_of(st.sampled_from(list(b"-^]\\[!az\x00\xff")), tricky_byte)
ascii_byte = st.integers(0, 0x7F)


@dataclass(frozen=True)
class GlobPart:
    """One piece of a generated pattern, with how to build keys that hit it."""

    text: bytes
    # A regular expression with Redis's reading of ``text``; None for the raw
    # adversarial pieces, whose reading only Redis itself may decide.
    regex: bytes | None
    fill: st.SearchStrategy[bytes]


@dataclass(frozen=True)
class Glob:
    parts: tuple[GlobPart, ...]

    @property
    def text(self) -> bytes:
        return b"".join(p.text for p in self.parts)

    @property
    def regex(self) -> bytes | None:
        pieces = [p.regex for p in self.parts]
        if any(piece is None for piece in pieces):
            return None
        return b"".join(piece for piece in pieces if piece is not None)

    def fill(self) -> st.SearchStrategy[bytes]:
        """Keys built piece by piece to match, or nearly match, the pattern."""
        return st.tuples(*(p.fill for p in self.parts)).map(b"".join)


def _byte_class(members: set[int], negated: bool) -> bytes:
    if not members:
        return b"[\\x00-\\xff]" if negated else b"[^\\x00-\\xff]"
    body = b"".join(b"\\x%02x" % m for m in sorted(members))
    return b"[" + (b"^" if negated else b"") + body + b"]"


@st.composite
def _class_part(draw: st.DrawFn) -> GlobPart:
    """A well-formed [...] whose members the generator knows: every single member is
    escaped, every range has ASCII ends and a first end that cannot start an escape,
    close the class, or turn into a negation."""
    negated = draw(st.booleans())
    members: set[int] = set()
    text = bytearray(b"[^" if negated else b"[")
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            member = draw(class_byte)
            members.add(member)
            text += b"\\" + bytes([member])
        else:
            low = draw(ascii_byte.filter(lambda b: b not in b"]\\^"))
            high = draw(ascii_byte)
            members.update(range(min(low, high), max(low, high) + 1))
            text += bytes([low, ord("-"), high])
    text += b"]"
    inside = sorted(members) or [0]
    fill = st.one_of(st.sampled_from(inside), tricky_byte).map(lambda b: bytes([b]))
    return GlobPart(bytes(text), _byte_class(members, negated), fill)


@st.composite
def _literal_part(draw: st.DrawFn) -> GlobPart:
    byte = draw(tricky_byte)
    data = bytes([byte])
    text = b"\\" + data if draw(st.booleans()) else escape_glob(data)
    return GlobPart(text, re.escape(data), st.just(data))


_STAR_PART = GlobPart(b"*", b".*", tricky_bytes(0, 3))
_ANY_PART = GlobPart(b"?", b".", tricky_bytes(1, 1))


@st.composite
def _raw_part(draw: st.DrawFn) -> GlobPart:
    """Bytes as a hostile caller would type them: lone ']', '-', '^', a '\\' that
    escapes whatever follows, a '[' whose class holds anything."""
    if draw(st.booleans()):
        data = bytes([draw(tricky_byte)])
        return GlobPart(data, None, st.just(data))
    inside = draw(st.lists(st.sampled_from(list(b"ap:-^\\[]\x00\xff")), max_size=4).map(bytes))
    text = b"[" + (b"^" if draw(st.booleans()) else b"") + inside + b"]"
    fill = st.sampled_from(list(inside or b"a")).map(lambda b: bytes([b]))
    return GlobPart(text, None, st.one_of(fill, tricky_bytes(1, 1)))


def _part(adversarial: bool) -> st.SearchStrategy[GlobPart]:
    # Literals twice: most of a real pattern is literal bytes.
    parts = [_literal_part(), _literal_part(), st.just(_STAR_PART), st.just(_ANY_PART)]
    parts.append(_class_part())
    if adversarial:
        parts += [_raw_part(), _raw_part()]
    return st.one_of(*parts)


def globs(*, adversarial: bool = False, max_parts: int = 7) -> st.SearchStrategy[Glob]:
    """Patterns; ``adversarial`` adds raw bytes whose reading is left to the parser."""
    return st.lists(_part(adversarial), min_size=1, max_size=max_parts).map(
        lambda parts: Glob(tuple(parts))
    )


@dataclass(frozen=True)
class GlobCase:
    glob: Glob
    keys: frozenset[bytes]


@st.composite
def glob_cases(draw: st.DrawFn, *, adversarial: bool = False, keys: int = 8) -> GlobCase:
    """A pattern and a few non-empty keys, most built to match it or nearly."""
    glob = draw(globs(adversarial=adversarial))
    built = draw(st.lists(glob.fill(), min_size=keys, max_size=keys))
    stray = draw(st.lists(tricky_bytes(1, 6), max_size=3))
    return GlobCase(glob, frozenset(k for k in built + stray if k))


@dataclass(frozen=True)
class ScopeCase:
    prefixes: tuple[bytes, ...]
    allow_all_keys: bool
    pattern: bytes
    keys: frozenset[bytes]


@st.composite
def scope_cases(draw: st.DrawFn, *, adversarial: bool = False) -> ScopeCase:
    """Prefixes, a pattern that often starts with (part of) one of them, and keys in,
    around and outside the prefixes, many of them matching the pattern."""
    prefixes = tuple(draw(st.lists(prefix_bytes, min_size=1, max_size=3, unique=True)))
    anchor = draw(st.sampled_from(prefixes))
    head = anchor[: draw(st.integers(0, len(anchor) - 1))]
    glob = draw(globs(adversarial=adversarial, max_parts=4))
    if draw(st.booleans()):
        # A wildcard where the prefix's next byte should be: the walk must filter.
        wildcard = draw(st.sampled_from([_STAR_PART, _ANY_PART]) | _class_part())
        glob = Glob((wildcard, *glob.parts))
    lead = draw(st.sampled_from([b"", head, anchor]))
    stems = st.sampled_from([lead, *prefixes, head, anchor.swapcase(), anchor[:-1], b""])
    tails = st.one_of(glob.fill(), tricky_bytes(0, 4))
    built = draw(st.lists(st.tuples(stems, tails).map(b"".join), min_size=1, max_size=8))
    matching = draw(st.lists(glob.fill().map(lead.__add__), max_size=3))
    return ScopeCase(
        prefixes,
        draw(st.sampled_from((False,) * 7 + (True,))),
        escape_glob(lead) + glob.text,
        frozenset(k for k in built + matching if k),
    )


def parse_or_reject(pattern: bytes) -> Pattern:
    """Parse a generated pattern; one the parser refuses is not an example."""
    try:
        return parse_pattern(pattern)
    except InvalidInput:
        reject()


def redis_reading(match: bytes) -> Pattern:
    """How Redis reads a MATCH argument (test_scope_redis.py checks this model)."""
    return parse_pattern(match)


# -- keys -----------------------------------------------------------------------------

APP = Scope(["app:"])


def test_check_key_accepts_key_inside_prefix() -> None:
    assert APP.check_key(b"app:user:1") == b"app:user:1"
    assert APP.check_key(b"app:") == b"app:"


@pytest.mark.parametrize("key", [b"other:secret", b"cache:app:x", b"x"])
def test_check_key_refuses_other_prefix(key: bytes) -> None:
    with pytest.raises(OutOfScope, match="outside the allowed prefixes"):
        APP.check_key(key)


@pytest.mark.parametrize("key", [b"APP:x", b"App:x", b"aPp:x", b"apP:x"])
def test_check_key_refuses_case_variant_of_prefix(key: bytes) -> None:
    with pytest.raises(OutOfScope):
        APP.check_key(key)


@pytest.mark.parametrize(
    "text",
    [
        "\u0430pp:x",  # Cyrillic a
        "\uff41\uff50\uff50:x",  # fullwidth app
        "app\uff1ax",  # fullwidth colon
        "app\u200b:x",  # zero-width space
        "a\u0307pp:x",  # combining dot
        "app\u0338:x",  # combining solidus
    ],
)
def test_check_key_refuses_unicode_lookalike_prefix(text: str) -> None:
    with pytest.raises(OutOfScope):
        APP.check_key(key_from_text(text))


@pytest.mark.parametrize("key", [b"app", b"ap:x", b"appx", b"app;x", b"ap"])
def test_check_key_refuses_truncated_or_altered_prefix(key: bytes) -> None:
    with pytest.raises(OutOfScope):
        APP.check_key(key)


@pytest.mark.parametrize("key", [b"x:app:secret", b" app:x", b"\x00app:x", b"\napp:x"])
def test_check_key_refuses_prefix_not_at_the_start(key: bytes) -> None:
    with pytest.raises(OutOfScope):
        APP.check_key(key)


@pytest.mark.parametrize("key", [b"*", b"?pp:x", b"[a]pp:x", b"\\app:x", b"ap*"])
def test_check_key_reads_glob_characters_literally(key: bytes) -> None:
    with pytest.raises(OutOfScope):
        APP.check_key(key)
    assert APP.check_key(b"app:*") == b"app:*"


def test_check_key_refuses_empty_key() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        APP.check_key(b"")
    with pytest.raises(InvalidInput, match="empty"):
        Scope([], allow_all_keys=True).check_key(b"")


def test_check_key_refuses_huge_key() -> None:
    at_limit = b"app:" + b"x" * (MAX_KEY_BYTES - 4)
    assert APP.check_key(at_limit) == at_limit
    with pytest.raises(InvalidInput, match="at most"):
        APP.check_key(at_limit + b"x")
    with pytest.raises(InvalidInput, match="at most"):
        Scope([], allow_all_keys=True).check_key(b"k" * (MAX_KEY_BYTES + 1))


def test_out_of_scope_message_does_not_echo_a_huge_hostile_key() -> None:
    with pytest.raises(OutOfScope) as caught:
        APP.check_key(b"other:" + b"A" * 4000)
    assert len(str(caught.value)) < 300


def test_check_keys_refuses_whole_batch_when_one_key_is_outside() -> None:
    with pytest.raises(OutOfScope):
        APP.check_keys([b"app:a", b"app:b", b"other:secret"])
    assert APP.check_keys([b"app:a", b"app:b"]) == [b"app:a", b"app:b"]


def test_key_from_text_refuses_lone_surrogate() -> None:
    with pytest.raises(InvalidInput, match="base64"):
        key_from_text("app:\ud800")
    with pytest.raises(InvalidInput, match="not valid Unicode"):
        pattern_from_text("app:\udfff*")


@pytest.mark.parametrize("text", ["app:*", "YXBwOng=\n", " YXBwOng=", "YXBwOng", "Y\u00e9=="])
def test_key_from_text_refuses_malformed_base64(text: str) -> None:
    with pytest.raises(InvalidInput, match="base64"):
        key_from_text(text, "base64")


def test_binary_key_in_scope_via_base64() -> None:
    inside = b"app:\xff\xfe\x00"
    text = base64.b64encode(inside).decode()
    assert APP.check_key(key_from_text(text, "base64")) == inside
    outside = base64.b64encode(b"\xffapp:" + inside).decode()
    with pytest.raises(OutOfScope):
        APP.check_key(key_from_text(outside, "base64"))
    with pytest.raises(InvalidInput, match="empty"):
        APP.check_key(key_from_text("", "base64"))


@pytest.mark.parametrize(
    "text", ["app:x\r\nDEL other:secret", "app:x\x00other:secret", "app:\r\n*3\r\n$3\r\nDEL"]
)
def test_key_with_crlf_or_nul_stays_one_literal_key(text: str) -> None:
    key = key_from_text(text)
    assert key == text.encode()
    assert APP.check_keys([key]) == [key]


# -- prefixes -------------------------------------------------------------------------


def test_prefix_covered_by_shorter_prefix_is_dropped() -> None:
    scope = Scope(["app:users:", "other:", "app:", b"app:x"])
    assert scope.prefixes == (b"app:", b"other:")
    assert scope.plan_scan(b"*") == [
        ScanPlan(b"app:", b"app:*", parse_pattern(b"*"), exact=True),
        ScanPlan(b"other:", b"other:*", parse_pattern(b"*"), exact=True),
    ]


def test_prefixes_given_as_text_and_bytes_are_the_same() -> None:
    assert Scope(["app:", b"app:", "caf\u00e9:"]).prefixes == (b"app:", "caf\u00e9:".encode())


@pytest.mark.parametrize("prefixes", [[""], [b""], ["app:", ""]])
def test_empty_prefix_refused(prefixes: list[str | bytes]) -> None:
    with pytest.raises(ValueError, match="allow_all_keys"):
        Scope(prefixes)


def test_scope_without_prefix_refused() -> None:
    with pytest.raises(ValueError, match="at least one prefix"):
        Scope([])


def test_allow_all_keys_reaches_every_key_and_ignores_prefixes() -> None:
    scope = Scope(["app:"], allow_all_keys=True)
    assert scope.prefixes == (b"",)
    assert scope.check_key(b"other:secret") == b"other:secret"
    assert scope.describe() == "the whole keyspace"
    (plan,) = scope.plan_scan(b"other:*")
    assert (plan.match, plan.exact) == (b"other:*", True)
    assert plan.accepts(b"other:x")
    assert not APP.contains(b"other:secret")


# -- patterns -------------------------------------------------------------------------


def test_plan_scan_pattern_inside_prefix_is_sent_as_is() -> None:
    (plan,) = APP.plan_scan(b"app:user:*")
    assert (plan.prefix, plan.match, plan.exact) == (b"app:", b"app:user:*", True)


@pytest.mark.parametrize("pattern", [b"other:*", b"APP:*", b"apx*", b"ap", b"app", b"\\\\app:*"])
def test_plan_scan_refuses_pattern_that_cannot_reach_the_prefix(pattern: bytes) -> None:
    with pytest.raises(OutOfScope, match="cannot match"):
        APP.plan_scan(pattern)


def test_plan_scan_star_alone_stays_inside_each_prefix() -> None:
    plans = Scope(["cache:", "app:"]).plan_scan(b"*")
    assert [(p.prefix, p.match, p.exact) for p in plans] == [
        (b"app:", b"app:*", True),
        (b"cache:", b"cache:*", True),
    ]


def test_plan_scan_walks_only_the_prefixes_the_pattern_can_reach() -> None:
    plans = Scope(["app:", "apq:", "other:"]).plan_scan(b"ap*")
    assert [p.match for p in plans] == [b"app:*", b"apq:*"]


@pytest.mark.parametrize("pattern", [b"?pp:*", b"ap?:*", b"????*", b"?*"])
def test_plan_scan_question_mark_cannot_replace_prefix_char(pattern: bytes) -> None:
    (plan,) = APP.plan_scan(pattern)
    assert plan.match == b"app:*"
    assert plan.accepts(b"app:x")
    outside = [b"xpp:x", b"apx:x", b"app;x", b"APP:x"]
    assert any(parse_pattern(pattern).matches(key) for key in outside)
    assert not any(plan.accepts(key) for key in outside)


@pytest.mark.parametrize("pattern", [b"[m]ita:*", b"[a-z]ita:*", b"[^x]ita:*", b"[lmn]i[s-u]a?*"])
def test_plan_scan_class_cannot_widen_prefix(pattern: bytes) -> None:
    (plan,) = Scope(["mita:"]).plan_scan(pattern)
    assert plan.match == b"mita:*"
    assert plan.accepts(b"mita:x")
    assert not plan.accepts(b"nita:x")
    assert not plan.accepts(b"mita")


@pytest.mark.parametrize("pattern", [b"\\a\\p\\p\\:*", b"app\\:*", b"ap\\p:\\x*"])
def test_plan_scan_backslash_escape_cannot_break_out(pattern: bytes) -> None:
    (plan,) = APP.plan_scan(pattern)
    assert plan.exact
    assert redis_reading(plan.match).literal_head.startswith(b"app:")
    assert not plan.accepts(b"\\app:x")


@pytest.mark.parametrize("pattern", [b"app:\\", b"app:x\\", b"\\", b"app:\\\\\\"])
def test_plan_scan_trailing_backslash_refused(pattern: bytes) -> None:
    with pytest.raises(InvalidInput, match="lone backslash"):
        APP.plan_scan(pattern)
    (plan,) = APP.plan_scan(b"app:\\\\")
    assert plan.accepts(b"app:\\")


@pytest.mark.parametrize(
    "pattern", [b"app:[abc", b"[app:*", b"app:[\\]", b"app:[a-]", b"app:[^", b"app:[\\"]
)
def test_plan_scan_unterminated_class_refused(pattern: bytes) -> None:
    with pytest.raises(InvalidInput, match="closing"):
        APP.plan_scan(pattern)


@pytest.mark.parametrize("pattern", [b"app:[a-\xff]", b"app:[\x80-\xff]", b"[\xe0-z]pp:*"])
def test_plan_scan_non_ascii_range_end_refused(pattern: bytes) -> None:
    with pytest.raises(InvalidInput, match="ASCII"):
        APP.plan_scan(pattern)


def test_plan_scan_non_ascii_class_member_is_a_plain_byte() -> None:
    (plan,) = APP.plan_scan(b"app:[\xff\x80]")
    assert plan.match == b"app:[\x80\xff]"
    assert redis_reading(plan.match).matches(b"app:\xff")
    assert not redis_reading(plan.match).matches(b"app:\xfe")


def test_pattern_with_many_stars_refused() -> None:
    stall = b"app:" + b"*a" * (MAX_PATTERN_STARS + 1)
    with pytest.raises(InvalidInput, match="stall"):
        APP.plan_scan(stall)
    APP.plan_scan(b"app:" + b"*a" * MAX_PATTERN_STARS)


def test_pattern_with_consecutive_stars_counts_them_once() -> None:
    (plan,) = APP.plan_scan(b"app:" + b"*" * 100 + b"x")
    assert plan.match == b"app:*x"


def test_pattern_too_long_refused() -> None:
    with pytest.raises(InvalidInput, match="at most"):
        APP.plan_scan(b"app:" + b"x" * MAX_PATTERN_BYTES)


def test_empty_pattern_refused() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        APP.plan_scan(b"")


@pytest.mark.parametrize("prefix", ["app[1]*?:", "app\\", "a]b[c-d^", "*", "?", "\\*"])
def test_prefix_with_glob_characters_is_escaped_in_match(prefix: str) -> None:
    raw = prefix.encode()
    (plan,) = Scope([prefix]).plan_scan(b"*")
    assert plan.match == escape_glob(raw) + b"*"
    reading = redis_reading(plan.match)
    assert reading.literal_head == raw
    assert reading.matches(raw + b"x")
    assert not reading.matches(b"app1:x")
    assert not reading.matches(b"x" + raw)


def test_prefix_with_glob_characters_is_not_reached_by_reading_it_as_a_glob() -> None:
    scope = Scope(["app[1]:"])
    # The caller's pattern is a glob: [1] is a class, so it names 'app1:...' keys, which
    # lie outside; the walk stays inside the literal prefix and finds none of them.
    (plan,) = scope.plan_scan(b"app[1]:*")
    assert plan.match == b"app\\[1\\]:*"
    assert not plan.accepts(b"app1:x")
    assert not plan.accepts(b"app[1]:x")
    (escaped,) = scope.plan_scan(b"app\\[1\\]:*")
    assert escaped.exact
    assert escaped.accepts(b"app[1]:x")


@pytest.mark.parametrize("pattern", [b"app:x\r\n*", b"app:\x00*", b"app:\r\nFLUSHALL\r\n"])
def test_pattern_with_crlf_or_nul_stays_one_literal_argument(pattern: bytes) -> None:
    (plan,) = APP.plan_scan(pattern)
    assert plan.match == pattern
    assert redis_reading(plan.match).literal_head == pattern.rstrip(b"*")


@pytest.mark.parametrize("pattern", [b"[!\\-z]", b"[\\^a]", b"[\\]\\-\\\\]", b"[^\\^]", b"[\\-]"])
def test_to_redis_class_examples_cannot_be_read_as_a_wider_range(pattern: bytes) -> None:
    parsed = parse_pattern(pattern)
    again = parse_pattern(parsed.to_redis())
    assert again == parsed
    for byte in range(256):
        assert again.matches(bytes([byte])) is parsed.matches(bytes([byte])), byte


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        (b"a*c", b"abbbc", True),
        (b"a*c", b"abbbd", False),
        (b"a?c", b"a\x00c", True),
        (b"a?c", b"ac", False),
        (b"a[bc]d", b"acd", True),
        (b"a[^bc]d", b"acd", False),
        (b"a[^bc]d", b"a\nd", True),
        (b"[z-a]", b"m", True),
        (b"[a-z]", b"\xe1", False),
        (b"[a-]]", b"_", True),
        (b"[a-]]", b"b", False),
        (b"[]", b"a", False),
        (b"[^]", b"\xff", True),
        (b"[\\]]", b"]", True),
        (b"\\*", b"*", True),
        (b"\\*", b"x", False),
        (b"*a*a*b", b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", False),
        (b"a]b", b"a]b", True),
        (b"a-^", b"a-^", True),
    ],
)
def test_pattern_matches_like_redis_on_examples(pattern: bytes, key: bytes, expected: bool) -> None:
    assert parse_pattern(pattern).matches(key) is expected


# -- properties -----------------------------------------------------------------------


@given(data=tricky_bytes(1, 40))
def test_escape_glob_makes_any_bytes_one_literal(data: bytes) -> None:
    parsed = parse_pattern(escape_glob(data))
    assert parsed.literal_head == data
    assert parsed.after_head() == ()
    assert parsed.matches(data)


@given(case=glob_cases())
def test_pattern_matches_agrees_with_a_regex_model_of_redis_glob(case: GlobCase) -> None:
    parsed = parse_pattern(case.glob.text)
    regex = case.glob.regex
    assert regex is not None
    for key in case.keys:
        expected = re.fullmatch(regex, key, re.DOTALL) is not None
        assert parsed.matches(key) is expected, (case.glob.text, key)


@given(case=glob_cases(adversarial=True))
def test_to_redis_is_read_back_as_the_same_pattern(case: GlobCase) -> None:
    parsed = parse_or_reject(case.glob.text)
    canonical = parsed.to_redis()
    assume(len(canonical) <= MAX_PATTERN_BYTES)
    again = parse_pattern(canonical)
    assert again == parsed
    assert again.to_redis() == canonical
    for key in case.keys:
        assert again.matches(key) is parsed.matches(key), (case.glob.text, key)


@given(members=st.sets(class_byte, max_size=5), negated=st.booleans())
def test_class_to_redis_cannot_be_read_as_a_wider_range_or_negation(
    members: set[int], negated: bool
) -> None:
    escaped = b"".join(b"\\" + bytes([m]) for m in members)
    parsed = parse_pattern(b"[" + (b"^" if negated else b"") + escaped + b"]")
    again = parse_pattern(parsed.to_redis())
    assert again == parsed
    for byte in range(256):
        assert again.matches(bytes([byte])) is ((byte in members) != negated), byte


def in_scope(case: ScopeCase, key: bytes) -> bool:
    """The rule itself, written apart from the code under test."""
    return case.allow_all_keys or any(key.startswith(p) for p in case.prefixes)


@given(case=scope_cases())
def test_check_key_accepts_exactly_the_keys_in_scope(case: ScopeCase) -> None:
    scope = Scope(case.prefixes, allow_all_keys=case.allow_all_keys)
    for key in case.keys:
        if in_scope(case, key):
            assert scope.check_key(key) == key
        else:
            with pytest.raises(OutOfScope):
                scope.check_key(key)


def _plans(case: ScopeCase) -> tuple[Scope, list[ScanPlan] | None]:
    scope = Scope(case.prefixes, allow_all_keys=case.allow_all_keys)
    try:
        return scope, scope.plan_scan(case.pattern)
    except OutOfScope:
        return scope, None


@given(case=scope_cases())
def test_scan_plans_find_exactly_the_in_scope_keys_the_pattern_matches(case: ScopeCase) -> None:
    _, plans = _plans(case)
    pattern = parse_pattern(case.pattern)
    wanted = {k for k in case.keys if in_scope(case, k) and pattern.matches(k)}
    if plans is None:
        assert not wanted, "refused a pattern that matches keys in scope"
        return
    assume(all(len(plan.match) <= MAX_PATTERN_BYTES for plan in plans))
    found = {
        k
        for plan in plans
        for k in case.keys
        if redis_reading(plan.match).matches(k) and plan.accepts(k)
    }
    assert found == wanted


@given(case=scope_cases(adversarial=True))
def test_every_key_a_scan_plan_accepts_is_in_scope(case: ScopeCase) -> None:
    parse_or_reject(case.pattern)
    scope, plans = _plans(case)
    for plan in plans or []:
        assert plan.prefix in scope.prefixes
        for key in case.keys:
            if plan.accepts(key):
                assert in_scope(case, key), (plan, key)
                assert scope.check_key(key) == key


@given(case=scope_cases(adversarial=True))
def test_a_page_filtered_at_once_keeps_exactly_what_the_key_checks_keep(case: ScopeCase) -> None:
    # A walk filters a SCAN page with select/within: the same keys, in the same order,
    # as accepts/contains key by key, or a page filter would be a way out of scope.
    parse_or_reject(case.pattern)
    scope, plans = _plans(case)
    page = list(case.keys) + [k + b"x" for k in case.keys]
    assert scope.within(page) == [k for k in page if scope.contains(k)]
    for plan in plans or []:
        assert plan.select(page) == [k for k in page if plan.accepts(k)]
        assert all(in_scope(case, k) for k in scope.within(plan.select(page)))


@given(case=scope_cases(adversarial=True))
def test_scan_match_always_opens_with_the_literal_prefix(case: ScopeCase) -> None:
    pattern = parse_or_reject(case.pattern)
    _, plans = _plans(case)
    for plan in plans or []:
        assert plan.match.startswith(escape_glob(plan.prefix))
        if pattern.literal_head.startswith(plan.prefix):
            assert plan.match == pattern.to_redis()
            assert plan.exact
        else:
            assert plan.match == escape_glob(plan.prefix) + b"*"
        if len(plan.match) <= MAX_PATTERN_BYTES:
            assert redis_reading(plan.match).literal_head.startswith(plan.prefix)
