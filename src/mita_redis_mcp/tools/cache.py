"""cache_hit_rate: what Redis can honestly say about a cache's hit rate, and no more.

Redis keeps one pair of counters, INFO stats keyspace_hits / keyspace_misses, bumped by
every read lookup of every client (GET, EXISTS, TYPE, TTL, ZCOUNT...), server-wide. Their
difference over a window is a keyspace lookup ratio, not a cache hit rate. Per namespace,
only two things are real: hit counters the app keeps itself (named by the profile), and,
with an explicit opt-in, key-miss notifications counted for the window.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from pydantic import BaseModel, Field

from mita_redis_mcp import cursor as cursors
from mita_redis_mcp.app import App
from mita_redis_mcp.errors import InvalidInput, OutOfScope, RedisRefused
from mita_redis_mcp.info import parse_info, total_info
from mita_redis_mcp.schema import HitCounter, KeyTemplate, Namespace, Profile, classify
from mita_redis_mcp.tools.base import Answer, ToolSpec

MAX_WINDOW_SECONDS = 60
# Counter keys read per call (twice: before and after the window).
MAX_COUNTERS = 5_000
# The flags key-miss events need: E (keyevent channel) and m (key miss, Redis >= 6).
_KEYMISS_FLAGS = "Em"

# Observations in progress, by backend: two at once would restore each other's flags.
_observing: set[int] = set()


# -- answers ------------------------------------------------------------------------


class LookupRatio(BaseModel):
    """INFO stats keyspace_hits / keyspace_misses over the window: every read lookup
    of every client and every key, server-wide."""

    hits: int = Field(description="keyspace_hits added during the window")
    misses: int = Field(description="keyspace_misses added during the window")
    ratio: float | None = Field(description="hits / (hits + misses); null with no lookups")
    lookups_per_second: float


class CounterFigure(BaseModel):
    """Hits an app counted itself, per cache namespace (MITA meta:*.access_count,
    cashews {key}:counter)."""

    profile: str
    namespace: str = Field(description="The cache namespace the counters belong to")
    counter_pattern: str
    counters_read: int = Field(description="Counter keys found and read (after the window)")
    total: int = Field(description="Sum of those counters now: hits since each was created")
    window_hits: int = Field(
        description="Increase of the counters during the window, new counters included: "
        "the app's own count of hits in this namespace (a lower bound when counters_reset)"
    )
    counters_reset: int = Field(
        description="Counters that went down or vanished during the window (entry refilled "
        "or expired): their window hits are not known"
    )
    complete: bool = Field(description="False when the scan budget stopped the search")


class MissFigure(BaseModel):
    """Key-miss events (notify-keyspace-events 'm') counted during the window."""

    profile: str | None = Field(description="null for 'unrecognised' and 'outside_scope'")
    namespace: str = Field(
        description="The namespace the missed keys belong to, 'unrecognised' (in scope, no "
        "namespace) or 'outside_scope' (keys this server may not show; counted only)"
    )
    kind: str | None
    misses: int
    per_request_lookup: str | None = Field(
        default=None, description="Set when the app reads these keys on nearly every request"
    )


class NamespaceHitRatio(BaseModel):
    """A per-namespace hit ratio, given only where both halves were measured."""

    profile: str
    namespace: str
    hits: int = Field(description="window_hits from the app's counters")
    misses: int = Field(description="key-miss events on this namespace's keys")
    hit_ratio: float = Field(description="hits / (hits + misses) over the window")


class CacheHitRateResult(Answer):
    window_seconds: float = Field(description="Measured time between the two INFO samples")
    server_wide: LookupRatio | None = Field(
        description="null when the server reports no keyspace_hits (or they were reset)"
    )
    what_it_is: str = Field(description="What server_wide measures, in plain words")
    dominated_by: list[str] = Field(
        description="Lookups the active profiles make on nearly every request: they, not "
        "the cache, drive server_wide"
    )
    counters: list[CounterFigure] = Field(description="App-kept hit counters, per namespace")
    misses_by_namespace: list[MissFigure] | None = Field(
        description="Key-miss events per namespace (observe_misses only; null otherwise)"
    )
    per_namespace: list[NamespaceHitRatio] = Field(
        description="Hit ratios per namespace, only where hits (complete counters, none "
        "reset) and misses (key-miss events) were both measured"
    )
    notify_keyspace_events: str | None = Field(
        default=None,
        description="observe_misses: the flags found, and set back after the window",
    )
    complete: bool = Field(description="False when a counter scan was budget-bounded")
    notes: list[str]


# -- the tool -----------------------------------------------------------------------


async def cache_hit_rate(
    app: App,
    window_seconds: Annotated[
        float,
        Field(
            ge=1,
            le=MAX_WINDOW_SECONDS,
            description=f"Sampling window in seconds (1 to {MAX_WINDOW_SECONDS})",
        ),
    ] = 10,
    namespaces: Annotated[
        list[str] | None,
        Field(
            max_length=50,
            description="Namespaces to report, as 'name' or 'profile.name' (e.g. "
            "'mita.cache'). Default: every namespace of the active profiles",
        ),
    ] = None,
    observe_misses: Annotated[
        bool,
        Field(
            description="Also count key misses per namespace: adds 'Em' to the server's "
            "notify-keyspace-events (CONFIG SET) for the window, subscribes to key-miss "
            "events, and restores the previous value exactly afterwards. A server-wide "
            "config change: only when the user agrees"
        ),
    ] = False,
) -> CacheHitRateResult:
    """Measure lookups over a short window: the server-wide keyspace lookup ratio, plus
    per-namespace figures only where they can be measured honestly.

    Takes two INFO stats samples window_seconds apart and sends no key lookup between
    them, so its own reads are not in the figure. That figure is Redis's
    keyspace_hits/misses: every read of every key by every client, server-wide. It is
    NOT a cache hit rate; `dominated_by` says what drives it (for MITA: the token
    blacklist GET on every authenticated request, a miss for any valid token, and the
    rate limiter's reads). Per namespace: the hit counters the app keeps itself (MITA
    meta:*.access_count, cashews {key}:counter), read before and after the window; and
    with observe_misses=true only, key-miss events counted per namespace. A hit ratio
    per namespace is given only where both were measured. Cost: 2 INFO, plus a bounded
    SCAN and one read per counter key, twice; observe_misses adds 5 to 6 commands and
    one subscription. On a Redis Cluster, INFO, CONFIG and the subscription are per
    primary, and the figures their sums. Takes window_seconds to answer.
    """
    selected = _select(app.profiles, namespaces)
    notes: list[str] = []
    specs = [
        _CounterSpec(p, ns, ns.hit_counter)
        for p, ns in selected
        if ns.kind == "cache" and ns.hit_counter is not None
    ]
    specs, unreachable = _reachable(app, specs)
    notes += unreachable
    before = await _read_counters(app, specs)

    misses: Counter[tuple[str | None, str]] | None = None
    flags: str | None = None
    started = time.monotonic()
    if observe_misses:
        misses, flags, sampled, observe_notes = await _observe(app, window_seconds)
        notes += observe_notes
    else:
        sampled = await _sample_window(app, window_seconds)
    first, second, elapsed = sampled if sampled else (None, None, time.monotonic() - started)

    after = await _read_counters(app, specs, seen=before)
    counters = [_counter_figure(spec, before, after) for spec in specs]
    complete = all(c.complete for c in counters)
    if not complete:
        notes.append(
            "The counter scan hit the scan budget: counters beyond it are not in `counters` "
            "(raise scan_budget, or name fewer namespaces)."
        )

    server_wide = _ratio(first, second, elapsed, notes)
    return CacheHitRateResult(
        window_seconds=round(elapsed, 3),
        server_wide=server_wide,
        what_it_is=(
            "server_wide is Redis's keyspace lookup ratio: every read lookup (GET, EXISTS, "
            "TYPE, TTL, ZCOUNT, ...) by every client on every key, server-wide. It is not a "
            "cache hit rate: a miss there is often a normal answer (a token not on the "
            "blacklist, a client with no limiter key yet)."
        ),
        dominated_by=_dominated_by(app.profiles),
        counters=counters,
        misses_by_namespace=_miss_figures(app.profiles, misses, selected)
        if misses is not None
        else None,
        per_namespace=_hit_ratios(counters, misses),
        notify_keyspace_events=flags,
        complete=complete,
        notes=notes,
    )


TOOLS = (ToolSpec(cache_hit_rate, "Cache hit rate (measured, honestly labelled)"),)


# -- sampling -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sample:
    hits: int
    misses: int


_Sampled = tuple[_Sample | None, _Sample | None, float]


async def _sample(app: App) -> _Sample | None:
    """keyspace_hits/misses of the server (summed over a cluster's primaries)."""
    nodes = await app.backend.info_by_node("stats")
    stats = total_info([parse_info(node.reply) for node in nodes]).get("stats", {})
    hits, misses = stats.get("keyspace_hits"), stats.get("keyspace_misses")
    if isinstance(hits, int) and isinstance(misses, int):
        return _Sample(hits, misses)
    return None


async def _sample_window(app: App, window: float) -> _Sampled:
    """Two INFO stats samples ``window`` seconds apart, nothing sent in between."""
    first = await _sample(app)
    started = time.monotonic()
    await anyio.sleep(window)
    second = await _sample(app)
    return first, second, time.monotonic() - started


async def _observe(
    app: App, window: float
) -> tuple[Counter[tuple[str | None, str]] | None, str | None, _Sampled | None, list[str]]:
    """The window with key-miss events counted: flags set, subscribed, sampled, and the
    previous flags restored exactly, whatever happens (error, cancellation)."""
    backend = app.backend
    if id(backend) in _observing:
        raise InvalidInput(
            "another observe_misses sampling is running on this server; try again after it"
        )
    try:
        previous = await backend.notify_keyspace_events()
    except RedisRefused as exc:
        note = (
            f"observe_misses: the server refused CONFIG GET notify-keyspace-events ({exc}); "
            "no misses per namespace."
        )
        return None, None, await _sample_window(app, window), [note]
    wanted = previous + "".join(c for c in _KEYMISS_FLAGS if c not in previous)
    counts: Counter[tuple[str | None, str]] = Counter()
    profiles = app.profiles

    def on_key(key: bytes) -> None:
        counts[_namespace_of(app, profiles, key)] += 1

    _observing.add(id(backend))
    notes: list[str] = []
    try:
        if wanted != previous:
            await backend.set_notify_keyspace_events(wanted)
        try:
            channel = f"__keyevent@{backend.db}__:keymiss".encode()
            async with backend.key_events(channel, on_key):
                sampled = await _sample_window(app, window)
        finally:
            if wanted != previous:
                with anyio.CancelScope(shield=True):
                    await backend.set_notify_keyspace_events(previous, restoring=True)
    except RedisRefused as exc:
        notes.append(
            f"observe_misses: the server refused the key-miss subscription ({exc}); "
            "no misses per namespace."
        )
        return None, previous, await _sample_window(app, window), notes
    finally:
        _observing.discard(id(backend))
    notes.append(
        "Key-miss events count every lookup of a missing key by any client, from the "
        "subscription to the second sample; hits have no event in Redis."
    )
    return counts, previous, sampled, notes


def _namespace_of(app: App, profiles: Sequence[Profile], key: bytes) -> tuple[str | None, str]:
    if not app.scope.contains(key):
        return None, "outside_scope"
    match = classify(profiles, key)
    if match is None:
        return None, "unrecognised"
    return match.profile.name, match.namespace.name


def _ratio(
    first: _Sample | None, second: _Sample | None, elapsed: float, notes: list[str]
) -> LookupRatio | None:
    if first is None or second is None:
        notes.append("The server reports no keyspace_hits/keyspace_misses in INFO stats.")
        return None
    hits, misses = second.hits - first.hits, second.misses - first.misses
    if hits < 0 or misses < 0:
        notes.append(
            "keyspace_hits/misses went down during the window (CONFIG RESETSTAT or a "
            "restart): no server-wide figure; call again."
        )
        return None
    total = hits + misses
    return LookupRatio(
        hits=hits,
        misses=misses,
        ratio=round(hits / total, 4) if total else None,
        lookups_per_second=round(total / elapsed, 2) if elapsed > 0 else 0.0,
    )


# -- app-kept counters ----------------------------------------------------------------


@dataclass(frozen=True)
class _CounterSpec:
    profile: Profile
    namespace: Namespace
    counter: HitCounter

    @property
    def label(self) -> tuple[str, str]:
        return self.profile.name, self.namespace.name

    @functools.cached_property
    def template(self) -> KeyTemplate:
        """The counter's layout with the cache key's field regexes: meta:query:... is
        not a counter of cache:{md5}."""
        regex = {
            name: spec.regex
            for name, spec in self.namespace.fields.items()
            if spec.regex and name in self.counter.template.fields
        }
        return KeyTemplate(self.counter.pattern, regex=regex)

    def owns(self, key: bytes) -> bool:
        return self.template.match(key) is not None


@dataclass
class _Counters:
    values: dict[bytes, int] = field(default_factory=dict)
    owner: dict[bytes, tuple[str, str]] = field(default_factory=dict)
    incomplete: set[tuple[str, str]] = field(default_factory=set)


def _reachable(app: App, specs: list[_CounterSpec]) -> tuple[list[_CounterSpec], list[str]]:
    kept: list[_CounterSpec] = []
    notes: list[str] = []
    for spec in specs:
        try:
            app.scope.plan_scan(spec.counter.template.glob())
        except OutOfScope:
            notes.append(
                f"{spec.profile.name}.{spec.namespace.name}: its hit counters "
                f"({spec.counter.pattern}) are outside the allowed prefixes; not read."
            )
            continue
        kept.append(spec)
    return kept, notes


async def _read_counters(
    app: App, specs: Sequence[_CounterSpec], seen: _Counters | None = None
) -> _Counters:
    """Find each namespace's counter keys (bounded SCAN) and read them. After the
    window, the keys found before are read again as well."""
    found = _Counters()
    budget = max(1, app.limits.scan_budget // max(1, len(specs)))
    for spec in specs:
        keys, complete = await _walk_counters(app, spec, budget)
        if not complete:
            found.incomplete.add(spec.label)
        for key in keys:
            found.owner.setdefault(key, spec.label)
    if seen is not None:
        for key, label in seen.owner.items():
            found.owner.setdefault(key, label)
    by_field: dict[bytes | None, list[bytes]] = {}
    for key, label in found.owner.items():
        spec = next(s for s in specs if s.label == label)
        name = spec.counter.hash_field
        by_field.setdefault(name.encode() if name else None, []).append(key)
    for hash_field, keys in by_field.items():
        values = await app.backend.counter_values(keys, hash_field)
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                found.values[key] = value
    return found


async def _walk_counters(app: App, spec: _CounterSpec, budget: int) -> tuple[list[bytes], bool]:
    plans = app.scope.plan_scan(spec.counter.template.glob())

    async def page(plan: int, cursor: int, count: int) -> tuple[int, list[bytes]]:
        return await app.backend.scan(cursor, plans[plan].match, count)

    walk = await cursors.walk(
        page,
        start=cursors.Position(),
        plans=len(plans),
        limit=MAX_COUNTERS,
        budget=budget,
        identity=lambda k: k,
        accept=lambda plan, k: plans[plan].accepts(k) and app.scope.contains(k) and spec.owns(k),
    )
    return walk.items, walk.complete


def _counter_figure(spec: _CounterSpec, before: _Counters, after: _Counters) -> CounterFigure:
    label = spec.label
    keys = [k for k, owner in after.owner.items() if owner == label]
    window_hits = reset = total = read = 0
    for key in keys:
        now = after.values.get(key)
        then = before.values.get(key)
        if now is None:
            if then is not None:
                reset += 1
            continue
        read += 1
        total += now
        if then is None:
            window_hits += now
        elif now >= then:
            window_hits += now - then
        else:
            reset += 1
            window_hits += now
    return CounterFigure(
        profile=spec.profile.name,
        namespace=spec.namespace.name,
        counter_pattern=spec.counter.pattern
        + (f" (field {spec.counter.hash_field})" if spec.counter.hash_field else ""),
        counters_read=read,
        total=total,
        window_hits=window_hits,
        counters_reset=reset,
        complete=label not in before.incomplete and label not in after.incomplete,
    )


# -- per namespace --------------------------------------------------------------------


def _select(
    profiles: Sequence[Profile], names: list[str] | None
) -> list[tuple[Profile, Namespace]]:
    every = [(p, ns) for p in profiles for ns in p.namespaces]
    if not names:
        return every
    chosen: list[tuple[Profile, Namespace]] = []
    for name in names:
        hits = [(p, ns) for p, ns in every if name in (ns.name, f"{p.name}.{ns.name}")]
        if not hits:
            known = ", ".join(f"{p.name}.{ns.name}" for p, ns in every) or "none"
            raise InvalidInput(f"no active profile has a namespace {name!r}; known: {known}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def _dominated_by(profiles: Sequence[Profile]) -> list[str]:
    out: list[str] = []
    for profile in profiles:
        for ns in profile.namespaces:
            if ns.per_request_lookup is None:
                continue
            out.append(
                f"{profile.name}.{ns.name} ({ns.pattern}): read on nearly every request; "
                f"that lookup is usually a {ns.per_request_lookup}"
                + (
                    " (a token that is not revoked is a keyspace miss)"
                    if ns.kind == "blacklist" and ns.per_request_lookup == "miss"
                    else ""
                )
            )
    return out


def _miss_figures(
    profiles: Sequence[Profile],
    misses: Counter[tuple[str | None, str]],
    selected: list[tuple[Profile, Namespace]],
) -> list[MissFigure]:
    wanted = {(p.name, ns.name) for p, ns in selected}
    by_label = {(p.name, ns.name): ns for p in profiles for ns in p.namespaces}
    figures: list[MissFigure] = []
    for (profile, name), count in misses.most_common():
        if profile is None:
            figures.append(MissFigure(profile=None, namespace=name, kind=None, misses=count))
            continue
        if (profile, name) not in wanted:
            continue
        ns = by_label[(profile, name)]
        figures.append(
            MissFigure(
                profile=profile,
                namespace=name,
                kind=ns.kind,
                misses=count,
                per_request_lookup=ns.per_request_lookup,
            )
        )
    return figures


def _hit_ratios(
    counters: list[CounterFigure], misses: Counter[tuple[str | None, str]] | None
) -> list[NamespaceHitRatio]:
    if misses is None:
        return []
    out: list[NamespaceHitRatio] = []
    for figure in counters:
        if not figure.complete or figure.counters_reset:
            continue
        missed = misses.get((figure.profile, figure.namespace), 0)
        total = figure.window_hits + missed
        if total:
            out.append(
                NamespaceHitRatio(
                    profile=figure.profile,
                    namespace=figure.namespace,
                    hits=figure.window_hits,
                    misses=missed,
                    hit_ratio=round(figure.window_hits / total, 4),
                )
            )
    return out
