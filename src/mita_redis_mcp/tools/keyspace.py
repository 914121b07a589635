"""keyspace_summary: what fills the keyspace, namespace by namespace, within a budget."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from mita_redis_mcp import cursor as cursors
from mita_redis_mcp.app import App
from mita_redis_mcp.redact import mask_personal, redact_credential
from mita_redis_mcp.schema import KeyMatch, classify
from mita_redis_mcp.schema.model import RedisType
from mita_redis_mcp.tools.base import Answer, ToolSpec

MAX_BUDGET = 200_000
# The smallest SCAN COUNT sent: a page of a tiny database still costs a round trip.
# Keys whose TYPE and PTTL go in one pipeline (and one progress notification).
CHUNK = 1_000
# MEMORY USAGE is sent for this many keys of each namespace, at most MEMORY_TOTAL a call.
MEMORY_PER_NAMESPACE = 16
MEMORY_TOTAL = 256
MAX_EXAMPLES = 5
MAX_BIGGEST = 10
UNRECOGNISED = "unrecognised"
_REDIS_TYPES: frozenset[str] = frozenset({"string", "list", "set", "zset", "hash", "stream"})
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
    sampled_keys: int = Field(description="Keys whose MEMORY USAGE was measured")
    sampled_bytes: int = Field(
        description="Their total MEMORY USAGE in bytes (Redis's sampled estimates)"
    )
    estimated_bytes: int = Field(
        description="EXTRAPOLATED: mean of the sample x keys of the namespace seen"
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
    keys: int = Field(description="Keys of this namespace among those examined")
    types: dict[str, int]
    ttl: dict[str, int] = Field(
        description="Keys per remaining-TTL bucket: no_ttl, under_1m, 1m_to_1h, 1h_to_1d, "
        "1d_to_7d, over_7d"
    )
    ttl_policy: str | None = Field(description="The profile's expectation: expected/none/optional")
    leaks: int = Field(description="Keys without a TTL where the profile expects one")
    leak_examples: list[str] = Field(description="A few leaked keys, sensitive parts masked")
    examples: list[str] = Field(
        default_factory=list, description="A few keys (unrecognised bucket only)"
    )
    memory: MemoryEstimate | None = Field(
        description="From a bounded sample, extrapolated; null where MEMORY is refused"
    )


class KeyspaceSummaryResult(Answer):
    namespaces: list[NamespaceSummary] = Field(description="Most keys first")
    keys_examined: int = Field(description="Keys in scope this call classified")
    scanned: int = Field(description="SCAN COUNT hints sent (the budget spent)")
    budget: int
    complete: bool = Field(description="True when every allowed prefix was walked to the end")
    next_cursor: str | None = Field(description="Pass as `cursor` to continue the walk")
    biggest: list[BigKey] = Field(description="The biggest keys among those measured")
    memory_method: str = Field(description="How `memory` and `biggest` were obtained")
    notes: list[str]


# -- the tool -----------------------------------------------------------------------


async def keyspace_summary(
    app: App,
    ctx: Context,
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

    For each: key count, types, TTL distribution, leaks (keys without a TTL where the
    profile expects one, with masked examples), memory from MEMORY USAGE on a small
    sample (Redis's own sampled estimate per key, then extrapolated to the namespace,
    and labelled so; where MEMORY is refused, e.g. Upstash, the biggest keys are by
    length instead), and the biggest keys measured. Sends progress notifications on
    long walks. When `complete` is false, the figures cover only the keys examined:
    call again with `cursor` = `next_cursor` and add the parts up.

    Cost: SCAN never lists keys outside the allowed prefixes, so each prefix is walked
    with its own SCAN MATCH over the whole database: a full walk examines about
    (number of prefixes x DBSIZE) keys, and grows with the number of prefixes. `budget`
    bounds the SCAN COUNT hints of one call (one DBSIZE, one SCAN per page of up to
    1000), and at most `budget` keys are classified: 2 pipelined commands per key
    (TYPE, PTTL), plus up to 256 MEMORY USAGE.
    """
    spend = budget or app.limits.scan_budget
    plans = app.scope.plan_scan(b"*")
    bind = cursors.binding(b"keyspace_summary")
    start = cursors.decode(cursor, bind, plans=len(plans))
    size = await app.backend.dbsize()
    page_size = cursors.table_page(size)
    scanned_so_far = 0

    async def page(plan: int, scan_cursor: int, count: int) -> tuple[int, list[bytes]]:
        nonlocal scanned_so_far
        reply = await app.backend.scan(scan_cursor, plans[plan].match, count)
        scanned_so_far += count
        await ctx.report_progress(
            scanned_so_far / 2, spend, f"scanned {scanned_so_far} of {spend} keys"
        )
        return reply

    walk = await cursors.walk(
        page,
        start=start,
        plans=len(plans),
        limit=spend,
        budget=spend,
        identity=lambda k: k,
        accept=lambda plan, k: plans[plan].accepts(k) and app.scope.contains(k),
        page_size=page_size,
    )
    keys = list(dict.fromkeys(walk.items))
    tally = _Tally()
    for index in range(0, len(keys), CHUNK):
        chunk = keys[index : index + CHUNK]
        metas = await app.backend.types_and_ttls(chunk)
        for key, (type_, pttl) in zip(chunk, metas, strict=True):
            tally.add(app, key, type_, pttl)
        done = index + len(chunk)
        await ctx.report_progress(
            spend / 2 + spend / 2 * done / len(keys), spend, f"classified {done} keys"
        )
    biggest, method, notes = await _measure(app, tally)
    if not walk.complete:
        notes.append(
            f"Budget-bounded: the budget ({walk.scanned} SCAN COUNT) was spent before every "
            f"prefix was walked; these figures cover only the {len(keys)} keys found. "
            "Call again with cursor to continue." + _full_walk_cost(len(plans), size)
        )
    await ctx.report_progress(spend, spend, "done")
    return KeyspaceSummaryResult(
        namespaces=sorted(
            (bucket.summary() for bucket in tally.buckets.values()),
            key=lambda s: (-s.keys, s.namespace),
        ),
        keys_examined=len(keys),
        scanned=walk.scanned,
        budget=spend,
        complete=walk.complete,
        next_cursor=walk.next.encode(bind) if walk.next else None,
        biggest=biggest,
        memory_method=method,
        notes=notes,
    )


TOOLS = (ToolSpec(keyspace_summary, "Keyspace summary per namespace"),)


# -- tallying -----------------------------------------------------------------------


@dataclass
class _Bucket:
    match: KeyMatch | None
    keys: int = 0
    types: Counter[str] = field(default_factory=Counter)
    ttl: Counter[str] = field(default_factory=Counter)
    leaks: int = 0
    leak_examples: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    sample: list[tuple[bytes, str]] = field(default_factory=list)
    memory: MemoryEstimate | None = None

    def summary(self) -> NamespaceSummary:
        ns = self.match.namespace if self.match else None
        return NamespaceSummary(
            profile=self.match.profile.name if self.match else None,
            namespace=ns.name if ns else UNRECOGNISED,
            kind=ns.kind if ns else None,
            pattern=ns.pattern if ns else None,
            dormant=ns.dormant if ns else False,
            keys=self.keys,
            types=dict(self.types),
            ttl=dict(self.ttl),
            ttl_policy=ns.ttl if ns else None,
            leaks=self.leaks,
            leak_examples=self.leak_examples,
            examples=self.examples,
            memory=self.memory,
        )


@dataclass
class _Tally:
    buckets: dict[tuple[str, str] | None, _Bucket] = field(default_factory=dict)
    names: dict[bytes, str] = field(default_factory=dict)

    def add(self, app: App, key: bytes, type_: str, pttl: int) -> None:
        if type_ == "none":
            return  # expired or deleted since SCAN returned it
        redis_type: RedisType | None = type_ if type_ in _REDIS_TYPES else None  # type: ignore[assignment]
        match = classify(app.profiles, key, redis_type) if redis_type else None
        label = (match.profile.name, match.namespace.name) if match else None
        bucket = self.buckets.get(label)
        if bucket is None:
            bucket = self.buckets[label] = _Bucket(match)
        bucket.keys += 1
        bucket.types[type_] += 1
        bucket.ttl[_ttl_bucket(pttl)] += 1
        shown = shown_key(match, key)
        self.names[key] = shown
        if match is None and len(bucket.examples) < MAX_EXAMPLES:
            bucket.examples.append(shown)
        if pttl < 0 and match is not None and match.namespace.ttl == "expected":
            bucket.leaks += 1
            if len(bucket.leak_examples) < MAX_EXAMPLES:
                bucket.leak_examples.append(shown)
        if len(bucket.sample) < MEMORY_PER_NAMESPACE:
            bucket.sample.append((key, type_))


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


async def _measure(app: App, tally: _Tally) -> tuple[list[BigKey], str, list[str]]:
    """MEMORY USAGE on each namespace's sample; lengths where MEMORY is refused."""
    notes: list[str] = []
    sample: list[tuple[bytes, str, _Bucket]] = []
    for bucket in tally.buckets.values():
        sample += [(k, t, bucket) for k, t in bucket.sample]
    sample = sample[:MEMORY_TOTAL]
    if not sample:
        return [], "nothing to measure", notes
    usage: list[int | None] | None = await app.backend.memory_usage([k for k, _, _ in sample])
    lengths: list[int | None] = [None] * len(sample)
    if usage is None:
        notes.append(
            "The server refused MEMORY USAGE (managed Redis such as Upstash, or an ACL "
            "user without it): no memory figures; the biggest keys are by length instead."
        )
        lengths = await app.backend.lengths([(k, t) for k, t, _ in sample])
        method = "MEMORY refused: biggest keys by length (bytes of a string, items otherwise)"
    else:
        per_bucket: dict[int, list[int]] = {}
        for (_, _, bucket), used in zip(sample, usage, strict=True):
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
            f"MEMORY USAGE on up to {MEMORY_PER_NAMESPACE} keys per namespace "
            f"({len(sample)} in all). Each figure is Redis's sampled estimate (for a "
            "collection, a few elements measured and extrapolated), not an exact count; "
            "estimated_bytes is further extrapolated from the sample to the namespace"
        )
    entries: list[BigKey] = []
    for index, (key, type_, bucket) in enumerate(sample):
        used = usage[index] if usage is not None else None
        entries.append(
            BigKey(
                key=tally.names[key],
                namespace=bucket.match.namespace.name if bucket.match else UNRECOGNISED,
                type=type_,
                bytes=used,
                length=lengths[index],
            )
        )

    def size(entry: BigKey) -> int:
        value: Any = entry.bytes if entry.bytes is not None else entry.length
        return int(value) if value is not None else -1

    entries.sort(key=size, reverse=True)
    return entries[:MAX_BIGGEST], method, notes
