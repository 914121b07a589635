"""What a key-schema profile knows about an app's Redis: frozen models, no I/O.

A profile is the domain knowledge a generic Redis client lacks: which keys belong to
which feature, what their values are, what must never be shown, how long they should
live, and for rate limiters the limits that live in application code rather than in
Redis. The domain tools read it; nothing here talks to Redis.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mita_redis_mcp.schema.template import KeyTemplate

Kind = Literal["rate_limit", "session", "blacklist", "cache", "queue", "metrics", "other"]
RedisType = Literal["string", "list", "set", "zset", "hash", "stream"]
Encoding = Literal[
    "text", "json", "pickle", "msgpack", "zlib", "integer", "float", "timestamps", "binary"
]
Sensitivity = Literal["none", "personal", "credential"]
TtlPolicy = Literal["expected", "none", "optional"]
Algorithm = Literal[
    "sliding_log_zset",
    "fixed_window",
    "moving_window_list",
    "sliding_window_counter",
    "fastapi_limiter",
]
Lookup = Literal["hit", "miss"]

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
ProfileName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*$", max_length=64)]

# The Redis type each algorithm keeps its state in.
ALGORITHM_TYPES: dict[Algorithm, RedisType] = {
    "sliding_log_zset": "zset",
    "fixed_window": "string",
    "moving_window_list": "list",
    "sliding_window_counter": "string",
    "fastapi_limiter": "string",
}
# ``limits``' granularities in seconds (its month is 30 days, its year 12 such months).
GRANULARITY_SECONDS: dict[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "month": 30 * 86400,
    "year": 12 * 30 * 86400,
}
# The fields ``limit_from_key`` reads the limit from.
KEY_LIMIT_FIELDS = ("amount", "multiples", "granularity")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClientDigest(_Frozen):
    """How an app turns a client's IP and User-Agent into the hash in its keys.

    MITA's limiter keys hold ``sha256(f"{ip}:{sha256(user_agent)[:8]}")[:16]`` (hex
    digests) instead of the client: with the IP and User-Agent from an access log, the
    same hash finds a client's keys without scanning the keyspace.
    """

    algorithm: Literal["sha256"] = Field(
        default="sha256", description="Hash function of both digests"
    )
    user_agent_chars: int = Field(
        default=8, ge=1, le=64, description="Hex characters of the User-Agent digest kept"
    )
    chars: int = Field(default=16, ge=1, le=64, description="Hex characters of the result kept")

    def compute(self, ip: str, user_agent: str) -> str:
        """The field value the app writes for this client."""
        ua = hashlib.sha256(user_agent.encode()).hexdigest()[: self.user_agent_chars]
        return hashlib.sha256(f"{ip}:{ua}".encode()).hexdigest()[: self.chars]


class KeyField(_Frozen):
    """One named field of a key pattern."""

    description: str = Field(default="", description="What the field holds")
    regex: str | None = Field(
        default=None,
        description="Regular expression the whole value must match (Python syntax). "
        "Makes matching exact: cache:{md5} with md5 = [0-9a-f]{32} does not claim "
        "cache:query:... keys",
    )
    sensitivity: Sensitivity = Field(
        default="none",
        description="'personal': personal data (an IP, an e-mail), masked in answers; "
        "'credential': the value is a secret (a session id, a bearer token), never shown "
        "whole",
    )
    digest: ClientDigest | None = Field(
        default=None,
        description="How the app derives this field from a client's IP and User-Agent",
    )

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str | None) -> str | None:
        if regex is not None:
            try:
                re.compile(regex)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return regex


class Limit(_Frozen):
    """A limit that lives in application code: at most ``limit`` requests per window."""

    limit: int = Field(ge=0, description="Requests allowed per window")
    window: float = Field(gt=0, description="Window length in seconds")


class PrefixLimit(Limit):
    """A limit for every endpoint whose name starts with ``prefix`` (a decorator default:
    MITA's ``auth_{function}`` and ``api_{function}``)."""

    prefix: str = Field(min_length=1, description="Endpoint names starting with this text")


class PenaltyStep(_Frozen):
    """From ``violations`` recorded violations on, the limit is divided by ``divisor``."""

    violations: int = Field(ge=1, description="Violations at which this step starts")
    divisor: float = Field(gt=1, description="The limit is divided by this")


class Penalty(_Frozen):
    """Progressive penalties: a violation counter that shrinks a client's limit."""

    namespace: Name = Field(
        description="Namespace (same profile) of the violation counters (integer STRINGs)"
    )
    steps: tuple[PenaltyStep, ...] = Field(
        min_length=1, description="Thresholds, any order; the highest one reached applies"
    )

    def divisor(self, violations: int) -> float:
        """What the limit is divided by after ``violations`` violations (1 for none)."""
        reached = [s.divisor for s in self.steps if violations >= s.violations]
        return max(reached, default=1.0)

    def effective_limit(self, limit: int, violations: int) -> int:
        """The limit after the penalty: divided and truncated, never below 1."""
        return max(1, int(limit / self.divisor(violations)))


class RateLimit(_Frozen):
    """How a rate-limiter namespace counts, and the limits Redis does not hold."""

    algorithm: Algorithm = Field(
        description="sliding_log_zset: a ZSET of request times (member = score = unix "
        "seconds); fixed_window: an INCR counter expiring with the window; "
        "moving_window_list: a LIST of request times, newest first; "
        "sliding_window_counter: current and previous window counters, weighted; "
        "fastapi_limiter: SET 1 PX window, then INCR"
    )
    endpoint_field: str | None = Field(
        default=None,
        description="The pattern field whose value selects a limit from `limits` / `by_prefix`",
    )
    limits: dict[str, Limit] = Field(
        default_factory=dict, description="Limit per endpoint value, exactly as in app code"
    )
    by_prefix: tuple[PrefixLimit, ...] = Field(
        default=(),
        description="Limits for endpoints not in `limits`, by name prefix (longest wins)",
    )
    default: Limit | None = Field(
        default=None, description="Limit of every other key of this namespace"
    )
    multiplier: int = Field(
        default=1,
        ge=1,
        description="This namespace allows this many times the limit found (MITA's :user: keys: 2)",
    )
    limit_from_key: bool = Field(
        default=False,
        description="The limit is written in the key itself: fields amount, multiples "
        "and granularity (the `limits` library)",
    )
    previous_window: Name | None = Field(
        default=None,
        description="sliding_window_counter: the namespace (same profile) of the "
        "previous window's counter, with the same fields",
    )
    penalty: Penalty | None = Field(
        default=None, description="Progressive penalties that shrink the limit"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.limit_from_key and (self.limits or self.by_prefix or self.default):
            raise ValueError(
                "limit_from_key reads the limit from the key: it excludes limits, "
                "by_prefix and default"
            )
        if (self.limits or self.by_prefix) and self.endpoint_field is None:
            raise ValueError("limits and by_prefix need endpoint_field: the field they key on")
        if self.previous_window and self.algorithm != "sliding_window_counter":
            raise ValueError("previous_window is only for algorithm 'sliding_window_counter'")
        return self

    def limit_for(self, fields: Mapping[str, str]) -> Limit | None:
        """The limit of the key with these field values, multiplier applied; None when
        the app's code holds no limit the profile knows for it."""
        base = self._from_key(fields) if self.limit_from_key else self._from_tables(fields)
        if base is None or self.multiplier == 1:
            return base
        return Limit(limit=base.limit * self.multiplier, window=base.window)

    def _from_key(self, fields: Mapping[str, str]) -> Limit | None:
        amount, multiples = fields.get("amount", ""), fields.get("multiples", "")
        seconds = GRANULARITY_SECONDS.get(fields.get("granularity", ""))
        if not (amount.isdigit() and multiples.isdigit()) or seconds is None:
            return None
        if int(multiples) == 0:
            return None
        return Limit(limit=int(amount), window=int(multiples) * seconds)

    def _from_tables(self, fields: Mapping[str, str]) -> Limit | None:
        endpoint = fields.get(self.endpoint_field) if self.endpoint_field else None
        if endpoint is not None:
            if endpoint in self.limits:
                return self.limits[endpoint]
            prefixed = [p for p in self.by_prefix if endpoint.startswith(p.prefix)]
            if prefixed:
                best = max(prefixed, key=lambda p: len(p.prefix))
                return Limit(limit=best.limit, window=best.window)
        return self.default


class HitCounter(_Frozen):
    """A hit counter the app keeps per cache entry: the only per-key hit figure in
    Redis (MITA's ``meta:{key}`` field ``access_count``, cashews' ``{key}:counter``)."""

    pattern: str = Field(
        description="Key of the counter; its fields are fields of the cache key "
        "(MITA: cache:query:{md5} -> meta:query:{md5})"
    )
    hash_field: str | None = Field(
        default=None,
        description="The HASH field holding the count; unset when the counter is an integer STRING",
    )
    _template: KeyTemplate = PrivateAttr()

    @field_validator("pattern")
    @classmethod
    def _parses(cls, pattern: str) -> str:
        KeyTemplate(pattern)
        return pattern

    @model_validator(mode="after")
    def _build(self) -> Self:
        self._template = KeyTemplate(self.pattern)
        return self

    @property
    def template(self) -> KeyTemplate:
        """The counter's key template."""
        return self._template

    def key_for(self, fields: Mapping[str, str]) -> bytes:
        """The counter key of the cache key with these field values."""
        return self._template.format(**{name: fields[name] for name in self._template.fields})


class Namespace(_Frozen):
    """One family of keys: their layout, contents, sensitivity and lifetime."""

    name: Name = Field(description="Identifier of the namespace within its profile")
    kind: Kind = Field(description="What the keys are for; selects the tools that read them")
    pattern: str = Field(
        description="Key layout with named fields, e.g. rate_limit:{endpoint}:client:{client}; "
        "{{ and }} are literal braces"
    )
    fields: dict[str, KeyField] = Field(
        default_factory=dict, description="Details of pattern fields (regex, sensitivity)"
    )
    redis_type: RedisType = Field(alias="type", description="The Redis type of every key")
    encoding: Encoding = Field(
        description="What values (STRING), elements (LIST, SET, ZSET members) or HASH "
        "values hold. pickle, zlib and msgpack are never decoded"
    )
    description: str = Field(default="", description="What the keys are, for the model")
    source: str = Field(default="", description="Where the layout comes from (file in app code)")
    ttl: TtlPolicy = Field(
        description="'expected': every key should expire (one without a TTL is a leak); "
        "'none': kept without a TTL by design; 'optional': either is normal"
    )
    max_ttl: int | None = Field(
        default=None, gt=0, description="The longest TTL the app sets, in seconds, if known"
    )
    value_sensitivity: Sensitivity = Field(
        default="none", description="Sensitivity of the whole value (see KeyField)"
    )
    personal_json_keys: tuple[str, ...] = Field(
        default=(),
        description="Names of JSON object members, at any depth of a value, that hold "
        "personal data and are masked (MITA's e-mail jobs: to_email)",
    )
    hash_fields: dict[str, Encoding] = Field(
        default_factory=dict,
        description="Known fields of a HASH and what each holds (RQ's job `data` is zlib)",
    )
    owner: str | None = Field(
        default=None,
        description="Where the owning user's id is: a pattern field, or 'value' when the "
        "whole value is the user id. Unset when Redis does not show it",
    )
    per_request_lookup: Lookup | None = Field(
        default=None,
        description="Set when the app reads these keys on (nearly) every request, so "
        "they dominate INFO keyspace_hits/misses: what such a lookup usually is",
    )
    dormant: bool = Field(
        default=False,
        description="Present in the app's code but probably not written in production: "
        "check the live keyspace before relying on it",
    )
    probe: bool = Field(
        default=False,
        description="Written by health checks, not by real clients: left out of per-client answers",
    )
    hit_counter: HitCounter | None = Field(
        default=None, description="The app-kept hit counter of each key, if any"
    )
    rate_limit: RateLimit | None = Field(
        default=None,
        validate_default=True,
        description="Required for kind 'rate_limit', forbidden otherwise",
    )
    _template: KeyTemplate = PrivateAttr()

    # Each check below sees the settings declared before it that are valid, so one
    # mistake does not hide the others: a file is fixed in one pass.

    @field_validator("pattern")
    @classmethod
    def _parses(cls, pattern: str) -> str:
        KeyTemplate(pattern)
        return pattern

    @field_validator("fields")
    @classmethod
    def _fields_exist(
        cls, fields: dict[str, KeyField], info: ValidationInfo
    ) -> dict[str, KeyField]:
        names = _pattern_fields(info)
        unknown = sorted(set(fields) - set(names or fields))
        if unknown:
            raise ValueError(
                f"the pattern has no field {', '.join('{' + n + '}' for n in unknown)}"
            )
        return fields

    @field_validator("max_ttl")
    @classmethod
    def _ttl_consistent(cls, max_ttl: int | None, info: ValidationInfo) -> int | None:
        if max_ttl is not None and info.data.get("ttl") == "none":
            raise ValueError("contradicts ttl = 'none'")
        return max_ttl

    @field_validator("hash_fields")
    @classmethod
    def _only_hash(
        cls, hash_fields: dict[str, Encoding], info: ValidationInfo
    ) -> dict[str, Encoding]:
        redis_type = info.data.get("redis_type", "hash")
        if hash_fields and redis_type != "hash":
            raise ValueError(f"only for type 'hash', not {redis_type!r}")
        return hash_fields

    @field_validator("owner")
    @classmethod
    def _owner_exists(cls, owner: str | None, info: ValidationInfo) -> str | None:
        names = _pattern_fields(info)
        if owner is not None and owner != "value" and names is not None and owner not in names:
            raise ValueError(f"{owner!r} is neither a pattern field nor 'value'")
        return owner

    @field_validator("hit_counter")
    @classmethod
    def _counter_fields(cls, counter: HitCounter | None, info: ValidationInfo) -> HitCounter | None:
        names = _pattern_fields(info)
        if counter is not None and names is not None:
            extra = sorted(set(counter.template.fields) - set(names))
            if extra:
                raise ValueError(
                    f"its pattern uses field(s) {', '.join(extra)}, which the key pattern lacks"
                )
        return counter

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_fits(cls, rl: RateLimit | None, info: ValidationInfo) -> RateLimit | None:
        kind = info.data.get("kind")
        if kind == "rate_limit" and rl is None:
            raise ValueError("a namespace of kind 'rate_limit' needs a [rate_limit] table")
        if kind is not None and kind != "rate_limit" and rl is not None:
            raise ValueError(f"only for kind 'rate_limit', not {kind!r}")
        if rl is not None:
            problems = _rate_limit_problems(rl, info.data.get("redis_type"), _pattern_fields(info))
            if problems:
                raise ValueError("\n".join(problems))
        return rl

    @model_validator(mode="after")
    def _build(self) -> Self:
        self._template = KeyTemplate(
            self.pattern, regex={n: f.regex for n, f in self.fields.items() if f.regex}
        )
        return self

    @property
    def template(self) -> KeyTemplate:
        """The parsed pattern, with the fields' regexes."""
        return self._template

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Orders namespaces that both match a key: the most specific claims it."""
        template = self._template
        constrained = sum(1 for name in template.fields if template.constrained(name))
        return (template.literal_size, constrained, len(template.literal_prefix))

    def sensitive_fields(self, level: Sensitivity) -> tuple[str, ...]:
        """The pattern fields of the given sensitivity."""
        return tuple(n for n, f in self.fields.items() if f.sensitivity == level)


@dataclass(frozen=True)
class KeyMatch:
    """A key recognised as one namespace of one profile, with its field values."""

    profile: Profile
    namespace: Namespace
    fields: dict[str, str]


class Profile(_Frozen):
    """The keyspace of one app or library: a set of namespaces."""

    name: ProfileName = Field(description="What the user selects the profile by")
    description: str = Field(default="", description="What app or library this describes")
    source: str = Field(default="", description="Where the facts come from")
    no_sessions: str | None = Field(
        default=None,
        description="Why this app keeps no sessions in Redis, said instead of an empty "
        "session list (MITA: stateless JWT)",
    )
    notes: tuple[str, ...] = Field(
        default=(), description="Facts a diagnostic should tell the user about this keyspace"
    )
    namespaces: tuple[Namespace, ...] = Field(
        min_length=1, description="The key families, in the order they are documented"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = profile_problems(self.namespaces, self.no_sessions)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def namespace(self, name: str) -> Namespace:
        """The namespace called ``name``; ``KeyError`` if there is none."""
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        raise KeyError(name)

    def of_kind(self, kind: Kind) -> tuple[Namespace, ...]:
        """The namespaces of one kind, in profile order."""
        return tuple(ns for ns in self.namespaces if ns.kind == kind)

    def rate_limit_namespaces(self) -> tuple[Namespace, ...]:
        """Rate-limiter namespaces to inspect: a sliding window's previous-window
        counters are read through their current window, not on their own."""
        previous = {
            ns.rate_limit.previous_window
            for ns in self.namespaces
            if ns.rate_limit and ns.rate_limit.previous_window
        }
        return tuple(ns for ns in self.of_kind("rate_limit") if ns.name not in previous)

    def classify(self, key: bytes, redis_type: RedisType | None = None) -> KeyMatch | None:
        """The namespace this key belongs to (see ``classify``)."""
        return classify([self], key, redis_type)


def classify(
    profiles: Iterable[Profile], key: bytes, redis_type: RedisType | None = None
) -> KeyMatch | None:
    """The namespace that claims ``key``, or None when no profile recognises it.

    When several match, ``redis_type`` (if known) keeps those of that type (``limits``'
    fixed and moving windows share one layout), then the most specific wins: most literal
    bytes, then most fields with a regex; a tie goes to the first declared.
    """
    best: KeyMatch | None = None
    for profile in profiles:
        for ns in profile.namespaces:
            if redis_type is not None and ns.redis_type != redis_type:
                continue
            fields = ns.template.match(key)
            if fields is None:
                continue
            if best is None or ns.specificity > best.namespace.specificity:
                best = KeyMatch(profile, ns, fields)
    return best


def scope_prefixes(profiles: Sequence[Profile]) -> tuple[str, ...]:
    """The literal prefixes of every namespace: the default scope when profiles are active.

    A prefix covered by a shorter one is left out. A namespace whose pattern starts with
    a field (cashews' ``{module}:...``) has no prefix and adds none: give one with
    ``--prefix``.
    """
    prefixes: list[str] = []
    for profile in profiles:
        for ns in profile.namespaces:
            prefix = ns.template.literal_prefix.decode()
            if prefix and prefix not in prefixes:
                prefixes.append(prefix)
    return tuple(p for p in prefixes if not any(o != p and p.startswith(o) for o in prefixes))


def _pattern_fields(info: ValidationInfo) -> tuple[str, ...] | None:
    """The field names of the namespace's pattern, if it validated."""
    pattern = info.data.get("pattern")
    return KeyTemplate(pattern).fields if isinstance(pattern, str) else None


def _rate_limit_problems(
    rl: RateLimit, redis_type: RedisType | None, names: Sequence[str] | None
) -> list[str]:
    problems: list[str] = []
    expected = ALGORITHM_TYPES[rl.algorithm]
    if redis_type is not None and redis_type != expected:
        problems.append(
            f"algorithm {rl.algorithm!r} keeps its state in a {expected!r}, but the "
            f"namespace's type is {redis_type!r}"
        )
    if names is None:
        return problems
    if rl.endpoint_field is not None and rl.endpoint_field not in names:
        problems.append(f"endpoint_field: the pattern has no field {{{rl.endpoint_field}}}")
    if rl.limit_from_key:
        missing = [f for f in KEY_LIMIT_FIELDS if f not in names]
        if missing:
            problems.append(
                "limit_from_key: the pattern needs the field(s) "
                + ", ".join("{" + f + "}" for f in missing)
            )
    return problems


def profile_problems(namespaces: Sequence[Namespace], no_sessions: str | None) -> list[str]:
    """Mistakes between the namespaces of one profile, one line each."""
    problems: list[str] = []
    by_name: dict[str, Namespace] = {}
    layouts: dict[tuple[str, str], str] = {}
    for ns in namespaces:
        if ns.name in by_name:
            problems.append(f"namespace {ns.name!r}, name: used by two namespaces")
        by_name.setdefault(ns.name, ns)
        layout = (ns.pattern, ns.redis_type)
        if layout in layouts:
            problems.append(
                f"namespace {ns.name!r}, pattern: same pattern and type as "
                f"{layouts[layout]!r}, so no key could tell them apart"
            )
        layouts.setdefault(layout, ns.name)
    for ns in namespaces:
        rl = ns.rate_limit
        if rl is not None and rl.previous_window is not None:
            problem = _previous_window_problem(ns, rl.previous_window, by_name)
            if problem:
                problems.append(f"namespace {ns.name!r}, rate_limit.previous_window: {problem}")
        if rl is not None and rl.penalty is not None and rl.penalty.namespace not in by_name:
            problems.append(
                f"namespace {ns.name!r}, rate_limit.penalty.namespace: the profile has no "
                f"namespace {rl.penalty.namespace!r}"
            )
    sessions = [ns.name for ns in namespaces if ns.kind == "session"]
    if sessions and no_sessions is not None:
        problems.append(
            f"no_sessions: the profile says it keeps no sessions, but {sessions[0]!r} is a "
            "session namespace"
        )
    return problems


def _previous_window_problem(
    ns: Namespace, name: str, by_name: Mapping[str, Namespace]
) -> str | None:
    previous = by_name.get(name)
    if previous is None or previous.rate_limit is None:
        return f"the profile has no rate-limit namespace {name!r}"
    if previous.rate_limit.algorithm != "sliding_window_counter":
        return f"{previous.name!r} is not a sliding_window_counter"
    if set(previous.template.fields) != set(ns.template.fields):
        return f"{previous.name!r} must have the same fields"
    return None
