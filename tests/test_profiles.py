"""Key-schema profiles: templates, the built-in profiles (MITA's exactly as in
../shared/keyspaces/mita.md) and the loader's error reporting."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mita_redis_mcp.errors import ConfigError, InvalidInput
from mita_redis_mcp.schema import (
    ClientDigest,
    KeyTemplate,
    Limit,
    Profile,
    ProfileError,
    builtin_names,
    classify,
    load_profiles,
    parse_profiles,
    scope_prefixes,
)
from mita_redis_mcp.scope import Scope, parse_pattern

DOCS = Path(__file__).resolve().parent.parent / "docs" / "profiles.md"
JTI = "8f14e45f-ceea-467f-a0e6-5d2b2c3c8e1b"
H16 = "0123456789abcdef"
MD5 = "d41d8cd98f00b204e9800998ecf8427e"


@pytest.fixture(scope="module")
def mita() -> Profile:
    [profile] = load_profiles(["mita"])
    return profile


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "myapp.toml"
    path.write_text(text, encoding="utf-8")
    return path


# ---- KeyTemplate --------------------------------------------------------------------


def test_template_parses_fields_and_literal_prefix() -> None:
    template = KeyTemplate("a:{x}:b:{y}")
    assert template.fields == ("x", "y")
    assert template.literal_prefix == b"a:"
    assert template.match(b"a:1:b:2") == {"x": "1", "y": "2"}
    assert template.format(x="1", y="2") == b"a:1:b:2"


def test_template_fields_must_not_be_empty() -> None:
    template = KeyTemplate("a:{x}:b:{y}")
    assert template.match(b"a::b:2") is None
    assert template.match(b"a:1:b:") is None
    with pytest.raises(InvalidInput, match="must not be empty"):
        template.format(x="", y="2")


def test_template_last_field_takes_the_rest_of_the_key() -> None:
    template = KeyTemplate("a:{x}:b:{y}")
    assert template.match(b"a:1:b:2:b:3") == {"x": "1", "y": "2:b:3"}


def test_template_without_fields_matches_only_itself() -> None:
    template = KeyTemplate("mita:blacklist:metrics")
    assert template.literal_prefix == b"mita:blacklist:metrics"
    assert template.match(b"mita:blacklist:metrics") == {}
    assert template.match(b"mita:blacklist:metrics2") is None


def test_template_regex_backtracks_so_a_field_may_hold_its_separator() -> None:
    template = KeyTemplate(
        "LIMITS:LIMITER/{key_func}/{scope}/{amount}/{multiples}/{granularity}",
        regex={
            "scope": "[^/]+",
            "amount": "[0-9]+",
            "multiples": "[0-9]+",
            "granularity": "second|minute|hour|day|month|year",
        },
    )
    assert template.match(b"LIMITS:LIMITER/user/42/app.views.f/10/1/minute") == {
        "key_func": "user/42",
        "scope": "app.views.f",
        "amount": "10",
        "multiples": "1",
        "granularity": "minute",
    }


def test_template_literal_braces() -> None:
    template = KeyTemplate("LIMITS:{{LIMITER/{base}}}/-1")
    assert template.literal_prefix == b"LIMITS:{LIMITER/"
    assert template.match(b"LIMITS:{LIMITER/a/b}/-1") == {"base": "a/b"}
    assert template.match(b"LIMITS:{LIMITER/a/b}") is None
    assert template.format(base="x") == b"LIMITS:{LIMITER/x}/-1"


def test_template_binary_keys_round_trip() -> None:
    template = KeyTemplate("bin:{x}")
    fields = template.match(b"bin:\xff\x00")
    assert fields is not None
    assert template.format(**fields) == b"bin:\xff\x00"


def test_template_format_refuses_a_value_that_changes_the_split() -> None:
    template = KeyTemplate("rate_limit:{endpoint}:client:{client}")
    with pytest.raises(InvalidInput, match="read back differently"):
        template.format(endpoint="x:client:y", client="z")


def test_template_format_refuses_a_value_failing_its_regex() -> None:
    template = KeyTemplate("mita:blacklist:token:{jti}", regex={"jti": "[0-9a-f-]{36}"})
    with pytest.raises(InvalidInput, match="not a valid 'jti'"):
        template.format(jti="*")


def test_template_format_needs_exactly_its_fields() -> None:
    template = KeyTemplate("a:{x}:b:{y}")
    with pytest.raises(ValueError, match="missing field"):
        template.format(x="1")
    with pytest.raises(ValueError, match="unknown field"):
        template.format(x="1", y="2", z="3")


def test_template_glob_escapes_literals_and_known_values() -> None:
    template = KeyTemplate("a*[{x}]:{y}")
    assert template.glob() == b"a\\*\\[*\\]:*"
    assert template.glob(x="?") == b"a\\*\\[\\?\\]:*"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty"),
        ("a:{x", "unbalanced '{'"),
        ("a:x}", "unbalanced '}'"),
        ("a:{x{y}", "unbalanced '{'"),
        ("{x}:{x}", "appears twice"),
        ("{x}{y}", "not separated"),
        ("a:{}", "not an identifier"),
        ("a:{1x}", "not an identifier"),
        (":".join(f"{{f{i}}}" for i in range(9)), "at most 8"),
    ],
)
def test_template_rejects_malformed_patterns(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        KeyTemplate(pattern)


def test_template_hostile_key_is_rejected_without_backtracking_forever() -> None:
    template = KeyTemplate("{a}:{b}:{c}:{d}:{e}", regex={"d": "[0-9]+", "e": "[0-9]+"})
    assert template.match(b":" * 16_000 + b"x") is None
    assert template.match(b"x:" * 8_000 + b"y") is None


_LITERAL = st.text(alphabet="ab:/{}-", min_size=1, max_size=4)
_SAFE_VALUE = st.text(alphabet="xyz019é\n\x00", min_size=1, max_size=6)


@st.composite
def _templates(draw: st.DrawFn) -> tuple[KeyTemplate, list[str]]:
    count = draw(st.integers(min_value=1, max_value=4))
    names = [f"f{i}" for i in range(count)]
    literals = [draw(st.one_of(st.just(""), _LITERAL))]
    literals += [draw(_LITERAL) for _ in range(count - 1)]
    literals.append(draw(st.one_of(st.just(""), _LITERAL)))
    pattern = "".join(
        literal.replace("{", "{{").replace("}", "}}") + (f"{{{name}}}" if name else "")
        for literal, name in zip(literals, [*names, ""], strict=True)
    )
    return KeyTemplate(pattern), names


@given(_templates(), st.data())
def test_property_format_then_match_gives_the_fields_back(
    drawn: tuple[KeyTemplate, list[str]], data: st.DataObject
) -> None:
    template, names = drawn
    values = {name: data.draw(_SAFE_VALUE) for name in names}
    assert template.match(template.format(**values)) == values


@given(_templates(), st.data())
def test_property_format_is_exact_or_refuses(
    drawn: tuple[KeyTemplate, list[str]], data: st.DataObject
) -> None:
    template, names = drawn
    values = {name: data.draw(st.text(alphabet="ab:/{}x", min_size=1)) for name in names}
    try:
        key = template.format(**values)
    except InvalidInput:
        return
    assert template.match(key) == values


@given(_templates(), st.lists(st.sampled_from([b"a", b"b", b":", b"/", b"{", b"}", b"\xff"])))
def test_property_match_then_format_gives_the_key_back(
    drawn: tuple[KeyTemplate, list[str]], pieces: list[bytes]
) -> None:
    template, _ = drawn
    key = b"".join(pieces)
    fields = template.match(key)
    if fields is not None:
        assert template.format(**fields) == key


@given(
    _templates(),
    st.lists(st.sampled_from([None, "[ab]+", "[0-9]+", "a.*b", "[^:]+"])),
    st.lists(st.sampled_from([b"a", b"b", b"1", b":", b"/", b"{", b"}", b"-", b"\xff"])),
)
def test_property_matches_agrees_with_match(
    drawn: tuple[KeyTemplate, list[str]], regexes: list[str | None], pieces: list[bytes]
) -> None:
    plain, names = drawn
    regex = {n: r for n, r in zip(names, regexes, strict=False) if r is not None}
    template = KeyTemplate(plain.pattern, regex=regex)
    key = b"".join(pieces)
    assert template.matches(key) == (template.match(key) is not None)
    if not names:
        return
    # A key of this layout whose fields may hold the literals that follow them.
    values = [b"".join(pieces[i::3]) or b"a" for i in range(len(names))]
    literals = plain._literals
    built = b"".join(lit + value for lit, value in zip(literals, [*values, b""], strict=True))
    assert template.matches(built) == (template.match(built) is not None)


_SIMPLE = ["[ab]+", "[0-9]+", "[^:]+", "[^/]{1,3}", "a.*b", "1-?[ab]*", "[]a]+"]


@given(
    _templates(),
    st.lists(st.sampled_from([None, *_SIMPLE, "(a|b)+", "^a+", "[ab]+?"])),
    st.lists(st.sampled_from([b"a", b"b", b"1", b":", b"/", b"{", b"}", b"-", b"]", b"\n"])),
)
def test_property_exact_regex_agrees_with_matches(
    drawn: tuple[KeyTemplate, list[str]], regexes: list[str | None], pieces: list[bytes]
) -> None:
    plain, names = drawn
    regex = {n: r for n, r in zip(names, regexes, strict=False) if r is not None}
    template = KeyTemplate(plain.pattern, regex=regex)
    exact = template.exact_regex()
    if exact is None:
        return
    compiled = re.compile(exact, re.DOTALL)
    key = b"".join(pieces)
    assert (compiled.fullmatch(key) is not None) == template.matches(key)
    if names:
        values = [b"".join(pieces[i::3]) or b"a" for i in range(len(names))]
        literals = plain._literals
        built = b"".join(lit + v for lit, v in zip(literals, [*values, b""], strict=True))
        assert (compiled.fullmatch(built) is not None) == template.matches(built)


def test_exact_regex_only_where_a_key_splits_one_way() -> None:
    hex16 = {"client": "[0-9a-f]{16}"}
    assert KeyTemplate(
        "a:{endpoint}:c:{client}", regex={"endpoint": "[a-z_]+", **hex16}
    ).exact_regex()
    assert KeyTemplate("a:{id}").exact_regex() == b"a:.+"
    assert KeyTemplate("a:b").exact_regex() == b"a:b"
    # An unconstrained field, or one whose regex can hold the separator after it, may
    # split several ways: matches decides.
    assert KeyTemplate("a:{ip}:{path}").exact_regex() is None
    assert KeyTemplate("a:{x}:{y}", regex={"x": "[a-z:]+"}).exact_regex() is None
    # Groups, anchors, alternation, lazy quantifiers, escapes: not embedded.
    for source in ("(a|b)+", "^a+", "a+?", r"\d+", "(?i)a+", "a{2}?"):
        assert KeyTemplate("a:{x}", regex={"x": source}).exact_regex() is None


@given(_templates(), st.data())
def test_property_glob_matches_every_formatted_key(
    drawn: tuple[KeyTemplate, list[str]], data: st.DataObject
) -> None:
    template, names = drawn
    values = {name: data.draw(_SAFE_VALUE) for name in names}
    key = template.format(**values)
    assert parse_pattern(template.glob()).matches(key)
    known = {name: values[name] for name in names[: data.draw(st.integers(0, len(names)))]}
    assert parse_pattern(template.glob(**known)).matches(key)


# ---- Built-in profiles ----------------------------------------------------------------


def test_every_builtin_profile_loads() -> None:
    names = builtin_names()
    assert names == sorted(
        [
            "mita",
            "limits",
            "fastapi-limiter",
            "fastapi-users",
            "flask-session",
            "starsessions",
            "django",
            "cashews",
            "rq",
        ]
    )
    profiles = load_profiles(names)
    assert [p.name for p in profiles] == names
    for profile in profiles:
        assert profile.namespaces
        for ns in profile.namespaces:
            assert ns.description, f"{profile.name}.{ns.name} has no description"


def test_every_builtin_glob_is_a_valid_scan_pattern_in_scope() -> None:
    profiles = load_profiles(builtin_names())
    scope = Scope(scope_prefixes(profiles))
    for profile in profiles:
        for ns in profile.namespaces:
            glob = ns.template.glob()
            parse_pattern(glob)
            if ns.template.literal_prefix:
                assert scope.plan_scan(glob)


MITA_LIMITS = {
    "auth_login": (10, 900),
    "auth_register": (5, 3600),
    "auth_password_reset": (3, 1800),
    "auth_token_refresh": (20, 300),
    "api_general": (1000, 3600),
    "api_upload": (10, 3600),
    "analytics_behavioral_insights": (10, 60),
    "analytics_seasonal_patterns": (5, 60),
    "analytics_aggregate": (20, 60),
    "analytics_anomalies": (20, 60),
}


def test_mita_carries_exactly_the_endpoint_table(mita: Profile) -> None:
    rl = mita.namespace("rate_limit_client").rate_limit
    assert rl is not None
    assert rl.algorithm == "sliding_log_zset"
    assert {k: (v.limit, v.window) for k, v in rl.limits.items()} == MITA_LIMITS


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("auth_login", Limit(limit=10, window=900)),
        ("auth_password_reset", Limit(limit=3, window=1800)),
        ("api_general", Limit(limit=1000, window=3600)),
        ("analytics_seasonal_patterns", Limit(limit=5, window=60)),
        ("auth_verify_email", Limit(limit=5, window=300)),
        ("api_list_goals", Limit(limit=1000, window=3600)),
        ("analytics_unknown", None),
    ],
)
def test_mita_client_limits_and_decorator_defaults(
    mita: Profile, endpoint: str, expected: Limit | None
) -> None:
    rl = mita.namespace("rate_limit_client").rate_limit
    assert rl is not None
    assert rl.limit_for({"endpoint": endpoint, "client": H16}) == expected


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("auth_login", Limit(limit=20, window=900)),
        ("analytics_aggregate", Limit(limit=40, window=60)),
        ("auth_verify_email", Limit(limit=10, window=300)),
        ("api_general", Limit(limit=2000, window=3600)),
    ],
)
def test_mita_user_keys_get_twice_the_limit(mita: Profile, endpoint: str, expected: Limit) -> None:
    rl = mita.namespace("rate_limit_user").rate_limit
    assert rl is not None
    assert rl.limit_for({"endpoint": endpoint, "uid": "42"}) == expected


def test_mita_progressive_penalties(mita: Profile) -> None:
    rl = mita.namespace("rate_limit_client").rate_limit
    assert rl is not None
    assert rl.penalty is not None
    assert mita.namespace(rl.penalty.namespace).pattern == "penalties:{endpoint}:{client}"
    assert [rl.penalty.divisor(v) for v in (0, 2, 3, 7, 8, 14, 15, 99)] == [
        1.0,
        1.0,
        1.5,
        1.5,
        2.5,
        2.5,
        4.0,
        4.0,
    ]
    assert rl.penalty.effective_limit(10, 8) == 4
    assert rl.penalty.effective_limit(3, 15) == 1


def test_mita_client_digest_is_the_apps_hash(mita: Profile) -> None:
    digest = mita.namespace("rate_limit_client").fields["client"].digest
    assert digest == ClientDigest(user_agent_chars=8, chars=16)
    ua = hashlib.sha256(b"okhttp/4.12").hexdigest()[:8]
    expected = hashlib.sha256(f"1.2.3.4:{ua}".encode()).hexdigest()[:16]
    assert digest.compute("1.2.3.4", "okhttp/4.12") == expected


MITA_KEYS = [
    (
        f"rate_limit:auth_login:client:{H16}",
        "rate_limit_client",
        {"endpoint": "auth_login", "client": H16},
    ),
    ("rate_limit:api_general:user:42", "rate_limit_user", {"endpoint": "api_general", "uid": "42"}),
    ("rate_limit:health_test:ip:127.0.0.1", "rate_limit_health_probe", {}),
    (
        "FASTAPI_LIMITER:1.2.3.4:/api/x:0:0",
        "fastapi_limiter",
        {"ip": "1.2.3.4", "path": "/api/x", "route_index": "0", "dep_index": "0"},
    ),
    (
        "FASTAPI_LIMITER:2001:db8::1:/api/v1/items:batch:1:2",
        "fastapi_limiter",
        {"ip": "2001:db8::1", "path": "/api/v1/items:batch", "route_index": "1", "dep_index": "2"},
    ),
    (f"mita:blacklist:token:{JTI}", "blacklist_token", {"jti": JTI}),
    (f"revoked:jwt:{JTI}", "blacklist_legacy", {"jti": JTI}),
    ("mita:user:tokens:42", "user_revoked_tokens", {"uid": "42"}),
    ("mita:blacklist:metrics", "blacklist_metrics", {}),
    (f"cache:{MD5}", "cache", {"md5": MD5}),
    (f"cache:query:{MD5}", "cache_query", {"md5": MD5}),
    ("tag:user:42", "cache_tag", {"tag": "user:42"}),
    (f"meta:query:{MD5}", "cache_meta", {"key": f"query:{MD5}"}),
    (f"penalties:auth_login:{H16}", "penalties", {"endpoint": "auth_login", "client": H16}),
    (f"auth:login:client:{H16}", "auth_client", {"type": "login", "client": H16}),
    (f"auth:login:email:{H16}", "auth_email", {"type": "login", "email": H16}),
    (f"auth_pattern:register:{H16}", "auth_pattern", {"type": "register", "client": H16}),
    (f"suspicious:{H16}", "suspicious", {"client": H16}),
    (
        "security_events:rate_limit_violation:2026-07-21-13",
        "security_events",
        {"type": "rate_limit_violation", "hour": "2026-07-21-13"},
    ),
    (f"request_frequency:{H16}", "request_frequency", {"client": H16}),
    ("task_result:abc-123", "task_result", {"id": "abc-123"}),
    ("mita:email:queue", "email_queue", {}),
    ("mita:email:queue:jobs", "email_jobs", {}),
    ("feature_flag_value:dark_mode", "feature_flag_value", {"flag": "dark_mode"}),
    (
        "feature_flag_value:dark_mode:user:42",
        "feature_flag_user_value",
        {"flag": "dark_mode", "user_id": "42"},
    ),
    ("feature_flag_def:dark_mode", "feature_flag_def", {"flag": "dark_mode"}),
]


@pytest.mark.parametrize(("key", "name", "fields"), MITA_KEYS, ids=[k[1] for k in MITA_KEYS])
def test_mita_key_matches_its_namespace_and_no_other(
    mita: Profile, key: str, name: str, fields: dict[str, str]
) -> None:
    raw = key.encode()
    matching = [ns.name for ns in mita.namespaces if ns.template.match(raw) is not None]
    assert matching == [name]
    found = mita.classify(raw)
    assert found is not None
    assert (found.namespace.name, found.fields) == (name, fields)


@pytest.mark.parametrize(
    "key",
    [
        "rate_limit:auth_login:client:not-a-hash",
        "mita:blacklist:token:not-a-uuid",
        "cache:query:short",
        "FASTAPI_LIMITER:1.2.3.4:/api/x:zero:0",
        "other:thing",
    ],
)
def test_mita_unrecognised_keys_match_nothing(mita: Profile, key: str) -> None:
    assert mita.classify(key.encode()) is None


def test_mita_scope_prefixes(mita: Profile) -> None:
    prefixes = scope_prefixes([mita])
    assert prefixes == (
        "rate_limit:",
        "FASTAPI_LIMITER:",
        "mita:blacklist:token:",
        "revoked:jwt:",
        "mita:user:tokens:",
        "mita:blacklist:metrics",
        "cache:",
        "tag:",
        "meta:",
        "penalties:",
        "auth:",
        "auth_pattern:",
        "suspicious:",
        "security_events:",
        "request_frequency:",
        "task_result:",
        "mita:email:queue",
        "feature_flag_value:",
        "feature_flag_def:",
    )
    scope = Scope(prefixes)
    assert all(scope.contains(key.encode()) for key, _, _ in MITA_KEYS)
    assert not scope.contains(b"mita:secret")


def test_mita_facts_the_tools_need(mita: Profile) -> None:
    assert mita.no_sessions is not None
    assert "stateless JWT" in mita.no_sessions
    assert not mita.of_kind("session")
    blacklists = [
        ns.template.literal_prefix for ns in mita.of_kind("blacklist") if "jti" in ns.fields
    ]
    assert blacklists == [b"mita:blacklist:token:", b"revoked:jwt:"]
    assert mita.namespace("blacklist_token").per_request_lookup == "miss"
    assert mita.namespace("blacklist_token").max_ttl == 7 * 86400
    assert mita.namespace("fastapi_limiter").sensitive_fields("personal") == ("ip",)
    assert mita.namespace("email_jobs").personal_json_keys == ("to_email", "variables")
    assert mita.namespace("rate_limit_health_probe").probe
    assert mita.namespace("cache_meta").ttl == "none"
    counter = mita.namespace("cache_query").hit_counter
    assert counter is not None
    assert counter.hash_field == "access_count"
    assert counter.key_for({"md5": MD5}) == f"meta:query:{MD5}".encode()


def test_limits_profile_reads_the_limit_from_the_key() -> None:
    [limits] = load_profiles(["limits"])
    key = b"LIMITS:LIMITER/user/7/app.views.index/10/2/minute"
    fixed = limits.classify(key, "string")
    moving = limits.classify(key, "list")
    assert fixed is not None
    assert fixed.namespace.name == "fixed_window"
    assert moving is not None
    assert moving.namespace.name == "moving_window"
    assert fixed.fields["key_func"] == "user/7"
    rl = fixed.namespace.rate_limit
    assert rl is not None
    assert rl.limit_for(fixed.fields) == Limit(limit=10, window=120)
    current = limits.classify(b"LIMITS:{LIMITER/1.2.3.4/app.f/5/1/month}")
    previous = limits.classify(b"LIMITS:{LIMITER/1.2.3.4/app.f/5/1/month}/-1")
    assert current is not None
    assert current.namespace.name == "sliding_window"
    assert previous is not None
    assert previous.namespace.name == "sliding_window_previous"
    assert current.namespace.rate_limit is not None
    assert current.namespace.rate_limit.limit_for(current.fields) == Limit(
        limit=5, window=30 * 86400
    )
    assert [ns.name for ns in limits.rate_limit_namespaces()] == [
        "fixed_window",
        "moving_window",
        "sliding_window",
    ]


@pytest.mark.parametrize(
    ("profile", "key", "namespace"),
    [
        ("fastapi-limiter", "fastapi-limiter:1.2.3.4:/items:0:0", "counter"),
        ("fastapi-users", "fastapi_users_token:Zm9vYmFy", "token"),
        ("flask-session", "session:abcDEF_-123", "session"),
        ("starsessions", "starsessions.abc123", "session"),
        ("django", ":1:django.contrib.sessions.cacheabc123", "session_cache"),
        ("django", ":1:django.contrib.sessions.cached_dbabc123", "session_cached_db"),
        ("cashews", "app.views:get_user:user_id:42", "cache"),
        ("cashews", "app.views:get_user:user_id:42:counter", "hit_counter"),
        ("rq", "rq:queue:default", "queue"),
        ("rq", "rq:job:5f3c", "job"),
        ("rq", "rq:failed:default", "registry"),
        ("rq", "rq:workers", "workers"),
    ],
)
def test_library_keys_are_recognised(profile: str, key: str, namespace: str) -> None:
    found = classify(load_profiles([profile]), key.encode())
    assert found is not None
    assert found.namespace.name == namespace


def test_session_ids_are_credentials() -> None:
    for profile in load_profiles(["fastapi-users", "flask-session", "starsessions", "django"]):
        for ns in profile.of_kind("session"):
            assert ns.sensitive_fields("credential"), f"{profile.name}.{ns.name}"
    [users] = load_profiles(["fastapi-users"])
    assert users.namespace("token").owner == "value"


def test_a_profile_without_prefix_adds_none() -> None:
    assert scope_prefixes(load_profiles(["cashews"])) == ()


# ---- User files and errors ------------------------------------------------------------


def test_docs_example_profile_loads(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) == 1
    [profile] = load_profiles([], _write(tmp_path, blocks[0]))
    assert profile.name == "myapp"
    limiter = profile.namespace("limiter").rate_limit
    user = profile.namespace("user_limiter").rate_limit
    assert limiter is not None
    assert user is not None
    assert limiter.limit_for({"route": "login"}) == Limit(limit=5, window=300)
    assert limiter.limit_for({"route": "admin_users"}) == Limit(limit=20, window=60)
    assert limiter.limit_for({"route": "other"}) == Limit(limit=100, window=60)
    assert user.limit_for({"route": "login"}) == Limit(limit=10, window=300)
    assert scope_prefixes([profile]) == (
        "myapp:rl:",
        "myapp:session:",
        "myapp:cache:product:",
        "myapp:hits:product:",
        "myapp:mail:jobs",
    )


def test_user_profile_is_selected_with_builtins(tmp_path: Path) -> None:
    [docs_example] = re.findall(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    profiles = load_profiles(["mita", "myapp"], _write(tmp_path, docs_example))
    assert [p.name for p in profiles] == ["mita", "myapp"]


BROKEN = """
[profiles.mita.namespaces.x]
kind = "cache"
pattern = "x:{a}"
type = "string"
encoding = "text"
ttl = "expected"

[profiles.myapp]
colour = "blue"

[profiles.myapp.namespaces.a]
kind = "cachez"
pattern = "a:{id"
type = "string"
encoding = "text"
ttl = "expected"

[profiles.myapp.namespaces.b]
kind = "rate_limit"
pattern = "b:{x}:{x}"
type = "string"
encoding = "integer"
ttl = "expected"

[profiles.myapp.namespaces.c]
kind = "rate_limit"
pattern = "c:{endpoint}"
type = "zset"
encoding = "timestamps"
ttl = "expected"

[profiles.myapp.namespaces.d]
kind = "rate_limit"
pattern = "d:{endpoint}"
type = "zset"
encoding = "timestamps"
ttl = "expected"
fields.endpont = { description = "typo" }
rate_limit = { algorithm = "fixed_window", limits_from = "nowhere" }
"""


def test_every_mistake_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, BROKEN)
    with pytest.raises(ProfileError) as caught:
        load_profiles(["myapp", "mitaa"], path)
    assert isinstance(caught.value, ConfigError)
    where = f"{path}: profile 'myapp'"
    expected = [
        f"{where}, colour: unknown setting",
        f"{where}, namespace 'a', kind: 'cachez' is not allowed",
        f"{where}, namespace 'a', pattern: unbalanced '{{' at position 2",
        f"{where}, namespace 'b', pattern: field {{x}} appears twice",
        f"{where}, namespace 'b', rate_limit: a namespace of kind 'rate_limit' needs",
        f"{where}, namespace 'c', rate_limit: a namespace of kind 'rate_limit' needs",
        f"{where}, namespace 'd', fields: the pattern has no field {{endpont}}",
        f"{where}, namespace 'd', rate_limit.limits_from: the profile has no rate-limit "
        "namespace 'nowhere'",
        f"{where}, namespace 'd', rate_limit: algorithm 'fixed_window' keeps its state in a "
        "'string'",
        f"{path}: profile 'mita': a built-in profile has this name",
        "unknown profile 'mitaa'; known profiles: cashews, django, fastapi-limiter, "
        "fastapi-users, flask-session, limits, mita, myapp, rq, starsessions",
    ]
    problems = caught.value.problems
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected)


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ProfileError, match="unknown profile 'mitta'; known profiles: cashews"):
        load_profiles(["mitta"])


def test_a_profile_selected_twice_is_a_mistake() -> None:
    with pytest.raises(ProfileError, match="selected more than once"):
        load_profiles(["mita", "mita"])


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read the profile file"):
        load_profiles([], tmp_path / "missing.toml")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profiles([], _write(tmp_path, "[profiles.x\n"))
    with pytest.raises(ProfileError, match=re.escape("no [profiles.<name>] table")):
        load_profiles([], _write(tmp_path, "title = 'x'\n"))


def test_cross_namespace_mistakes_are_reported() -> None:
    text = """
[profiles.x]
no_sessions = "stateless"

[profiles.x.namespaces.s]
kind = "session"
pattern = "s:{sid}"
type = "string"
encoding = "json"
ttl = "expected"

[profiles.x.namespaces.current]
kind = "rate_limit"
pattern = "w:{k}"
type = "string"
encoding = "integer"
ttl = "expected"

[profiles.x.namespaces.current.rate_limit]
algorithm = "sliding_window_counter"
previous_window = "gone"
penalty = { namespace = "nope", steps = [{ violations = 1, divisor = 2 }] }

[profiles.x.namespaces.same]
kind = "rate_limit"
pattern = "w:{k}"
type = "string"
encoding = "integer"
ttl = "expected"
rate_limit = { algorithm = "fixed_window" }
"""
    profiles, declared, problems = parse_profiles(text, "x.toml")
    assert profiles == {}
    assert declared == ["x"]
    assert problems == [
        "x.toml: profile 'x', namespace 'same', pattern: same pattern and type as 'current', "
        "so no key could tell them apart",
        "x.toml: profile 'x', namespace 'current', rate_limit.previous_window: the profile "
        "has no rate-limit namespace 'gone'",
        "x.toml: profile 'x', namespace 'current', rate_limit.penalty.namespace: the profile "
        "has no namespace 'nope'",
        "x.toml: profile 'x', no_sessions: the profile says it keeps no sessions, but 's' is "
        "a session namespace",
    ]
