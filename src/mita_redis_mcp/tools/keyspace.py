"""keyspace_summary: what fills the keyspace, namespace by namespace, within a budget."""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from mita_redis_mcp import cursor as cursors
from mita_redis_mcp.app import App
from mita_redis_mcp.redact import mask_personal, redact_credential
from mita_redis_mcp.schema import KeyMatch, KeyTemplate, Profile
from mita_redis_mcp.schema.model import Namespace
from mita_redis_mcp.schema.template import MAX_MATCH_BYTES
from mita_redis_mcp.scope import pattern_from_text
from mita_redis_mcp.tools.base import Answer, ToolSpec

MAX_BUDGET = 200_000
# Keys of each namespace whose TYPE, PTTL and MEMORY USAGE are read (one pipeline per
# call): types, TTLs, leaks and memory are estimated from them; key counts come from
# the walk itself, by name, and are exact.
SAMPLE_PER_NAMESPACE = 32
# Sampled keys per call in all, whatever the number of namespaces.
SAMPLE_TOTAL = 1024
MAX_EXAMPLES = 5
MAX_BIGGEST = 10
UNRECOGNISED = "unrecognised"
# TTL buckets: upper bound in seconds, label.
_TTL_BUCKETS: tuple[tuple[float, str], ...] = (
    (60, "under_1m"),
    (3600, "1m_to_1h"),
    (86400, "1h_to_1d"),
    (7 * 86400, "1d_to_7d"),
    (float("inf"), "over_7d"),
)


# -- answers ------------------------------------------------------------------------


class MemoryEstimate(BaseModel):
    sampled_keys: int = Field(description="Sampled keys whose MEMORY USAGE was measured")
    sampled_bytes: int = Field(
        description="Their total MEMORY USAGE in bytes (Redis's sampled estimates)"
    )
    estimated_bytes: int = Field(
        description="ESTIMATED: mean of the sample x `keys` of the namespace"
    )


class BigKey(BaseModel):
    key: str = Field(description="The key, personal and credential parts masked")
    namespace: str
    type: str
    bytes: int | None = Field(
        description="MEMORY USAGE (Redis's sampled estimate); null where MEMORY is refused"
    )
    length: int | None = Field(
        default=None, description="Bytes of a string or items of a collection"
    )


class NamespaceSummary(BaseModel):
    profile: str | None = Field(description="null for the unrecognised bucket")
    namespace: str = Field(description=f"Namespace name, or '{UNRECOGNISED}'")
    kind: str | None
    pattern: str | None
    dormant: bool = False
    keys: int = Field(
        description="EXACT: keys of this namespace found by this call's walk, told by "
        "their names (no command per key)"
    )
    sampled: int = Field(
        description="Keys read for the SAMPLE figures (types, ttl, leaks_sampled, "
        f"memory): a uniform random sample of at most {SAMPLE_PER_NAMESPACE} of `keys`, "
        "minus any gone since the walk found them. When it equals `keys`, every key "
        "was read and the sample figures are exact"
    )
    types: dict[str, int] = Field(description="SAMPLE: sampled keys per Redis type")
    ttl: dict[str, int] = Field(
        description="SAMPLE: sampled keys per remaining-TTL bucket: no_ttl, under_1m, "
        "1m_to_1h, 1h_to_1d, 1d_to_7d, over_7d"
    )
    ttl_policy: str | None = Field(description="The profile's expectation: expected/none/optional")
    leaks_sampled: int = Field(
        description="SAMPLE: sampled keys without a TTL where the profile expects one"
    )
    leaks_estimated: int = Field(
        description="ESTIMATED: leaks_sampled / sampled x keys, rounded (exact when "
        "sampled equals keys)"
    )
    leak_examples: list[str] = Field(
        description="A few leaked keys of the sample, sensitive parts masked"
    )
    examples: list[str] = Field(
        default_factory=list, description="A few keys (unrecognised bucket only)"
    )
    same_layout: list[str] = Field(
        default_factory=list,
        description="Namespaces with this very key layout, told apart only by their "
        "type: their keys are counted in `keys` here; `types` shows the split",
    )
    memory: MemoryEstimate | None = Field(
        description="From the sample, extrapolated; null where MEMORY is refused"
    )


class KeyspaceSummaryResult(Answer):
    namespaces: list[NamespaceSummary] = Field(description="Most keys first")
    keys_examined: int = Field(
        description="EXACT: keys in scope this call's walk found and counted by name"
    )
    keys_sampled: int = Field(
        description="Keys whose TYPE, PTTL and MEMORY USAGE were read (the samples)"
    )
    scanned: int = Field(description="SCAN COUNT hints sent (the budget spent)")
    budget: int
    complete: bool = Field(description="True when every allowed prefix was walked to the end")
    next_cursor: str | None = Field(description="Pass as `cursor` to continue the walk")
    biggest: list[BigKey] = Field(description="The biggest keys of the samples")
    sampling: str = Field(description="Which figures are exact and which come from a sample")
    memory_method: str = Field(description="How `memory` and `biggest` were obtained")
    notes: list[str]


# -- the tool -----------------------------------------------------------------------


async def keyspace_summary(
    app: App,
    ctx: Context,
    pattern: Annotated[
        str,
        Field(
            min_length=1,
            max_length=512,
            description="Only keys matching this Redis glob, e.g. 'rate_limit:*' for one "
            "family of namespaces: a pattern inside one allowed prefix is one SCAN walk "
            "of the database instead of one per prefix. Default '*': every key in scope.",
        ),
    ] = "*",
    budget: Annotated[
        int | None,
        Field(
            ge=100,
            le=MAX_BUDGET,
            description="Keys Redis may examine in this call (SCAN COUNT hints); default "
            "the server's scan_budget (10000)",
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Field(max_length=200, description="next_cursor of the previous answer, to continue"),
    ] = None,
) -> KeyspaceSummaryResult:
    """What fills the Redis keyspace in scope, per namespace of the active profiles,
    plus an 'unrecognised' bucket (keys in scope no namespace describes).

    Figures are labelled EXACT, SAMPLE or ESTIMATED. EXACT: `keys` per namespace:
    every key the walk finds is counted, told by its name (no command per key).
    SAMPLE: types, TTL distribution, leaks (keys without a TTL where the profile
    expects one, with masked examples) and memory come from a uniform random sample
    of up to 32 keys per namespace (`sampled` says how many), read with TYPE, PTTL and
    MEMORY USAGE in one pipeline. ESTIMATED: `leaks_estimated` and
    `memory.estimated_bytes` scale the sample up to `keys`; say so when quoting them.
    MEMORY USAGE is itself Redis's per-key estimate; where MEMORY is refused (e.g.
    Upstash) the biggest keys are by length instead. Sends progress notifications on
    long walks. When `complete` is false, the figures cover only the keys found so
    far: call again with `cursor` = `next_cursor` and add the parts up.

    Cost: SCAN never lists keys outside the allowed prefixes, so the default pattern
    walks each prefix with its own SCAN MATCH over the whole database: a full walk
    examines about (number of prefixes x DBSIZE) keys. A pattern inside one prefix
    ('rate_limit:*') is a single walk over DBSIZE keys. `budget` bounds the SCAN COUNT
    hints of one call (one SCAN per page of up to 1000, plus one DBSIZE when the
    pattern spans several prefixes); then 3 commands per sampled key (at most 1024),
    in one round trip.
    """
    raw_pattern = pattern_from_text(pattern)
    spend = budget or app.limits.scan_budget
    plans = app.scope.plan_scan(raw_pattern)
    bind = cursors.binding(b"keyspace_summary", raw_pattern)
    start = cursors.decode(cursor, bind, plans=len(plans))
    # Several prefixes mean several walks over the whole table: size their pages by it.
    size = await app.backend.dbsize() if len(plans) > 1 else None
    page_size = cursors.table_page(size)
    tally = _Tally(_Namer(app.profiles))
    ahead: dict[tuple[int, int, int], asyncio.Task[tuple[int, list[bytes]]]] = {}
    scanned_so_far = 0

    async def page(plan: int, scan_cursor: int, count: int) -> tuple[int, list[bytes]]:
        nonlocal scanned_so_far
        asked = ahead.pop((plan, scan_cursor, count), None)
        match = plans[plan].match
        reply = await (asked or app.backend.scan(scan_cursor, match, count))
        scanned_so_far += count
        following = reply[0]
        # The walk asks for the next page once it has counted this one. When it will
        # surely ask (a full page follows, within the budget), ask Redis now, so that
        # Redis reads that page while this one is counted.
        if following != 0 and count == page_size and scanned_so_far + count <= spend:
            ahead[(plan, following, count)] = asyncio.create_task(
                app.backend.scan(following, match, count)
            )
            # Loop turns for the task to take a connection and send the SCAN (redis-py
            # needs two); only then does counting this page overlap Redis's next one.
            for _ in range(3):
                await asyncio.sleep(0)
        await ctx.report_progress(
            scanned_so_far, spend, f"scanned {scanned_so_far} of {spend} keys"
        )
        return reply

    try:
        walk = await cursors.walk(
            page,
            start=start,
            plans=len(plans),
            limit=spend,
            budget=spend,
            identity=lambda k: k,
            select=lambda plan, keys: app.scope.within(plans[plan].select(keys)),
            page_size=page_size,
            on_page=tally.count_all,
        )
    finally:
        for task in ahead.values():
            task.cancel()
        if ahead:
            await asyncio.gather(*ahead.values(), return_exceptions=True)
    biggest, method, notes = await _read_samples(app, tally)
    notes += tally.layout_notes()
    if not walk.complete:
        notes.append(
            f"Budget-bounded: the budget ({walk.scanned} SCAN COUNT) was spent before every "
            f"prefix was walked; these figures cover only the {tally.keys} keys found. "
            "Call again with cursor to continue." + _full_walk_cost(len(plans), size)
        )
    await ctx.report_progress(spend, spend, "done")
    return KeyspaceSummaryResult(
        namespaces=sorted(
            (bucket.summary() for bucket in tally.buckets.values()),
            key=lambda s: (-s.keys, s.namespace),
        ),
        keys_examined=tally.keys,
        keys_sampled=tally.sampled,
        scanned=walk.scanned,
        budget=spend,
        complete=walk.complete,
        next_cursor=walk.next.encode(bind) if walk.next else None,
        biggest=biggest,
        sampling=(
            "EXACT: keys and keys_examined (every key found, counted by name). SAMPLE: "
            f"types, ttl, leaks_sampled and memory, from at most {SAMPLE_PER_NAMESPACE} "
            f"random keys per namespace ({tally.sampled} read in all, one pipeline of "
            "TYPE, PTTL and MEMORY USAGE). ESTIMATED: leaks_estimated and "
            "memory.estimated_bytes, the sample scaled up to keys"
        ),
        memory_method=method,
        notes=notes,
    )


TOOLS = (ToolSpec(keyspace_summary, "Keyspace summary per namespace"),)


# -- tallying -----------------------------------------------------------------------


_NamerEntry = tuple[Profile, Namespace, KeyTemplate, bytes]


class _Namer:
    """The namespace a key's name belongs to, as ``classify`` without a type decides
    (the most specific layout; a tie goes to the first declared), with each
    namespace's template looked up once, not once per key."""

    def __init__(self, profiles: tuple[Profile, ...]) -> None:
        entries = [(profile, ns) for profile in profiles for ns in profile.namespaces]
        # A stable sort: namespaces of equal specificity keep their declared order.
        entries.sort(key=lambda entry: entry[1].specificity, reverse=True)
        self._entries = [
            (profile, ns, ns.template, ns.template.literal_prefix) for profile, ns in entries
        ]
        # By a key's first byte, the namespaces that may claim it (in the same order):
        # a walk asks this of every key it finds.
        self._unprefixed = [entry for entry in self._entries if not entry[3]]
        self._by_first: dict[int, list[_NamerEntry]] = {}
        for entry in self._entries:
            if entry[3]:
                self._by_first[entry[3][0]] = []
        for first, candidates in self._by_first.items():
            candidates += [e for e in self._entries if not e[3] or e[3][0] == first]
        self._regex = self._combined()

    def _combined(self) -> re.Pattern[bytes] | None:
        """One regex naming a key's namespace as ``label`` does, by the name of the
        group that matched: ``e<index>`` (of ``_entries``), ``none`` (no namespace) or
        ``slow`` (a key that starts like a namespace without an exact regex: ask
        ``label``). The alternatives keep ``_entries``' order, and a namespace can only
        claim keys that start with its literal prefix, so the first alternative that
        matches is ``label``'s answer. None when a namespace without an exact regex
        may claim any key (its layout starts with a field)."""
        exact = [entry[2].exact_regex() for entry in self._entries]
        slow = {head for (_, _, _, head), r in zip(self._entries, exact, strict=True) if r is None}
        if b"" in slow:
            return None
        parts = []
        if slow:
            heads = b"|".join(re.escape(head) for head in sorted(slow))
            parts.append(b"(?P<slow>(?:" + heads + b").*)")
        parts += [b"(?P<e%d>%s)" % (index, r) for index, r in enumerate(exact) if r is not None]
        parts.append(b"(?P<none>.*)")
        return re.compile(b"|".join(parts), re.DOTALL)

    def names(self, keys: Sequence[bytes]) -> list[str] | None:
        """For each key, the name of the group of ``_combined`` it matches; None when
        there is no such regex or a key is too long for it (then ask ``label``)."""
        if self._regex is None or not keys or max(map(len, keys)) > MAX_MATCH_BYTES:
            return None
        matched = map(self._regex.fullmatch, keys)
        # Never None: the last alternative matches any key.
        return list(map(attrgetter("lastgroup"), matched))

    def entry(self, name: str) -> tuple[Profile, Namespace] | None:
        """The profile and namespace a group name of ``names`` stands for."""
        if name == "none":
            return None
        profile, ns, _, _ = self._entries[int(name[1:])]
        return profile, ns

    def __call__(self, key: bytes) -> KeyMatch | None:
        for profile, ns, template, head in self._entries:
            if key.startswith(head):
                fields = template.match(key)
                if fields is not None:
                    return KeyMatch(profile, ns, fields)
        return None

    def label(self, key: bytes) -> tuple[Profile, Namespace] | None:
        """The profile and namespace ``self(key)`` names, without its field values."""
        candidates = self._by_first.get(key[0], self._unprefixed) if key else self._unprefixed
        for profile, ns, template, head in candidates:
            if key.startswith(head) and template.matches(key):
                return profile, ns
        return None

    def same_layout(self, namespace: Namespace) -> list[str]:
        return [
            ns.name
            for _, ns, _, _ in self._entries
            if ns is not namespace and ns.pattern == namespace.pattern
        ]


@dataclass
class _Bucket:
    match: KeyMatch | None
    same_layout: list[str]
    keys: int = 0
    examples: list[str] = field(default_factory=list)
    sample: list[bytes] = field(default_factory=list)
    sampled: int = 0
    types: Counter[str] = field(default_factory=Counter)
    ttl: Counter[str] = field(default_factory=Counter)
    leaks: int = 0
    leak_examples: list[str] = field(default_factory=list)
    memory: MemoryEstimate | None = None
    # Reservoir sampling state once ``sample`` is full (Li's Algorithm L): the index
    # among this bucket's keys of the next one taken into it, and the running weight.
    taken_next: int = 0
    weight: float = 1.0

    def offer(self, keys: Sequence[bytes], rng: random.Random) -> None:
        """Count ``keys`` and keep ``sample`` a uniform random sample of every key
        offered so far: a few random draws per key taken into it, none per key."""
        first = self.keys
        self.keys += len(keys)
        room = SAMPLE_PER_NAMESPACE - len(self.sample)
        if room > 0:
            self.sample += keys[:room]
            if len(self.sample) < SAMPLE_PER_NAMESPACE:
                return
            self.weight = _draw_weight(rng)
            self.taken_next = SAMPLE_PER_NAMESPACE + _skip(self.weight, rng)
        while self.taken_next < self.keys:
            self.sample[rng.randrange(SAMPLE_PER_NAMESPACE)] = keys[self.taken_next - first]
            self.weight *= _draw_weight(rng)
            self.taken_next += 1 + _skip(self.weight, rng)

    def summary(self) -> NamespaceSummary:
        ns = self.match.namespace if self.match else None
        return NamespaceSummary(
            profile=self.match.profile.name if self.match else None,
            namespace=ns.name if ns else UNRECOGNISED,
            kind=ns.kind if ns else None,
            pattern=ns.pattern if ns else None,
            dormant=ns.dormant if ns else False,
            keys=self.keys,
            sampled=self.sampled,
            types=dict(self.types),
            ttl=dict(self.ttl),
            ttl_policy=ns.ttl if ns else None,
            leaks_sampled=self.leaks,
            leaks_estimated=round(self.leaks / self.sampled * self.keys) if self.sampled else 0,
            leak_examples=self.leak_examples,
            examples=self.examples,
            same_layout=self.same_layout,
            memory=self.memory,
        )


@dataclass
class _Tally:
    namer: _Namer
    buckets: dict[tuple[str, str] | None, _Bucket] = field(default_factory=dict)
    keys: int = 0
    sampled: int = 0
    seen: set[bytes] = field(default_factory=set)
    rng: random.Random = field(default_factory=random.Random)

    def count_all(self, keys: Sequence[bytes]) -> None:
        """Count a page of keys in their namespaces (each key once: SCAN may return a
        key twice). A walk calls this for every page: the common case (new keys, all
        with an exact regex) runs in C, one regex match per key."""
        unique = set(keys)
        if len(unique) == len(keys) and self.seen.isdisjoint(unique):
            self.seen |= unique
        else:
            keys = [key for key in dict.fromkeys(keys) if key not in self.seen]
            self.seen.update(keys)
        names = self.namer.names(keys)
        if names is None:
            for key in keys:
                self.count(key)
            return
        if len(set(names)) == 1:
            groups: dict[str, Sequence[bytes]] = {names[0]: keys}
        else:
            grouped: defaultdict[str, list[bytes]] = defaultdict(list)
            for key, name in zip(keys, names, strict=True):
                grouped[name].append(key)
            groups = dict(grouped)
        for name, members in groups.items():
            if name == "slow":
                for key in members:
                    self.count(key)
            else:
                self._add(self.namer.entry(name), members)

    def count(self, key: bytes) -> None:
        """Count ``key`` in its namespace, told by ``label``."""
        self._add(self.namer.label(key), (key,))

    def _add(self, found: tuple[Profile, Namespace] | None, keys: Sequence[bytes]) -> None:
        """Count ``keys``, all of namespace ``found``, and offer them to its sample."""
        label = (found[0].name, found[1].name) if found else None
        bucket = self.buckets.get(label)
        if bucket is None:
            match = self.namer(keys[0])
            same = self.namer.same_layout(match.namespace) if match else []
            bucket = self.buckets[label] = _Bucket(match, same)
        self.keys += len(keys)
        if found is None:
            for key in keys[: MAX_EXAMPLES - len(bucket.examples)]:
                bucket.examples.append(shown_key(None, key))
        bucket.offer(keys, self.rng)

    def samples(self) -> list[tuple[bytes, _Bucket]]:
        """Every bucket's sample, cut evenly to ``SAMPLE_TOTAL`` keys in all (a random
        part of a random sample is still one)."""
        each = max(1, SAMPLE_TOTAL // max(1, len(self.buckets)))
        return [(key, b) for b in self.buckets.values() for key in b.sample[:each]]

    def layout_notes(self) -> list[str]:
        return [
            f"{b.match.namespace.name} shares its key layout with {', '.join(b.same_layout)} "
            "(told apart only by type): `keys` counts them together; the sample's types "
            "show the split."
            for b in self.buckets.values()
            if b.match is not None and b.same_layout
        ]


def _draw_weight(rng: random.Random) -> float:
    """Algorithm L's factor of the weight: U ** (1 / k), U uniform in (0, 1]."""
    return math.exp(math.log(1.0 - rng.random()) / SAMPLE_PER_NAMESPACE)


def _skip(weight: float, rng: random.Random) -> int:
    """How many keys Algorithm L passes over before it takes the next into the sample."""
    if weight >= 1.0:
        return 0
    return math.floor(math.log(1.0 - rng.random()) / math.log1p(-weight))


def _full_walk_cost(prefixes: int, size: int | None) -> str:
    if size is None:
        return ""
    total = prefixes * size
    return (
        f" A full walk examines about {total} keys ({prefixes} prefixes, each a SCAN over "
        f"all {size} keys of the database)."
    )


def _ttl_bucket(pttl: int) -> str:
    if pttl < 0:
        return "no_ttl"
    seconds = pttl / 1000
    return next(label for bound, label in _TTL_BUCKETS if seconds < bound)


def shown_key(match: KeyMatch | None, key: bytes) -> str:
    """A key for an answer: personal fields masked, credential fields redacted."""
    if match is None:
        text = key.decode("utf-8", "backslashreplace")
        return text if len(text) <= 200 else text[:200] + "..."
    ns = match.namespace
    values: dict[str, str] = {}
    for name, value in match.fields.items():
        sensitivity = ns.fields[name].sensitivity if name in ns.fields else "none"
        if sensitivity == "personal":
            value = mask_personal(value)
        elif sensitivity == "credential":
            value = redact_credential(value)
        elif len(value) > 120:
            value = value[:120] + "..."
        values[name] = value
    text = ns.pattern
    for name, value in values.items():
        text = text.replace("{" + name + "}", value.replace("{", "\0").replace("}", "\1"), 1)
    return text.replace("{{", "{").replace("}}", "}").replace("\0", "{").replace("\1", "}")


async def _read_samples(app: App, tally: _Tally) -> tuple[list[BigKey], str, list[str]]:
    """TYPE, PTTL and MEMORY USAGE of every sampled key, in one pipeline, into each
    bucket's sample figures; lengths where MEMORY is refused."""
    notes: list[str] = []
    sample = tally.samples()
    if not sample:
        return [], "nothing to measure", notes
    metas, usage = await app.backend.types_ttls_memory([k for k, _ in sample])
    shown: list[str] = []
    for (key, bucket), (type_, pttl) in zip(sample, metas, strict=True):
        # The bucket's match holds its first key's fields: this key's own, to show it.
        shown.append(shown_key(tally.namer(key), key))
        if type_ == "none":
            continue  # expired or deleted since SCAN returned it
        tally.sampled += 1
        bucket.sampled += 1
        bucket.types[type_] += 1
        bucket.ttl[_ttl_bucket(pttl)] += 1
        ns = bucket.match.namespace if bucket.match else None
        if pttl < 0 and ns is not None and ns.ttl == "expected":
            bucket.leaks += 1
            if len(bucket.leak_examples) < MAX_EXAMPLES:
                bucket.leak_examples.append(shown[-1])
    lengths: list[int | None] = [None] * len(sample)
    if usage is None:
        notes.append(
            "The server refused MEMORY USAGE (managed Redis such as Upstash, or an ACL "
            "user without it): no memory figures; the biggest keys are by length instead."
        )
        pairs = zip(sample, metas, strict=True)
        lengths = await app.backend.lengths([(key, type_) for (key, _), (type_, _) in pairs])
        method = "MEMORY refused: biggest keys by length (bytes of a string, items otherwise)"
    else:
        per_bucket: dict[int, list[int]] = {}
        for (_, bucket), used in zip(sample, usage, strict=True):
            if used is not None:
                per_bucket.setdefault(id(bucket), []).append(used)
        for bucket in tally.buckets.values():
            measured = per_bucket.get(id(bucket), [])
            if measured:
                bucket.memory = MemoryEstimate(
                    sampled_keys=len(measured),
                    sampled_bytes=sum(measured),
                    estimated_bytes=round(sum(measured) / len(measured) * bucket.keys),
                )
        method = (
            f"MEMORY USAGE on the sampled keys ({len(sample)} in all, up to "
            f"{SAMPLE_PER_NAMESPACE} per namespace). Each figure is Redis's sampled "
            "estimate (for a collection, a few elements measured and extrapolated), not "
            "an exact count; estimated_bytes is further extrapolated from the sample to "
            "the namespace"
        )
    entries: list[BigKey] = []
    for index, ((_, bucket), (type_, _)) in enumerate(zip(sample, metas, strict=True)):
        if type_ == "none":
            continue
        entries.append(
            BigKey(
                key=shown[index],
                namespace=bucket.match.namespace.name if bucket.match else UNRECOGNISED,
                type=type_,
                bytes=usage[index] if usage is not None else None,
                length=lengths[index],
            )
        )

    def size(entry: BigKey) -> int:
        value: Any = entry.bytes if entry.bytes is not None else entry.length
        return int(value) if value is not None else -1

    entries.sort(key=size, reverse=True)
    return entries[:MAX_BIGGEST], method, notes
