"""``mita-redis-mcp doctor``: is this setup going to work, and is it safe?

``run_checks`` asks Redis (through ``Backend``, never directly); the verdicts are built
by pure functions from what it answered, and ``report`` formats them. Nothing here
prints a password: the URL shown is ``Settings.safe_url``, and the ``.mcp.json``
snippet names ``${REDIS_URL}`` instead of its value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal
from urllib.parse import urlsplit

from mita_redis_mcp.app import App
from mita_redis_mcp.backend import Backend, Command, SentinelView, offered
from mita_redis_mcp.config import OPTIONS, Limits, Settings
from mita_redis_mcp.errors import BackendError, RedisRefused
from mita_redis_mcp.info import parse_info
from mita_redis_mcp.terminal import verdict_line

Status = Literal["OK", "WARN", "FAIL"]

# Hostname endings of managed Redis services.
MANAGED_HOSTS: tuple[tuple[str, str], ...] = (
    (".upstash.io", "Upstash"),
    (".cache.amazonaws.com", "AWS ElastiCache / MemoryDB"),
    (".redis.cache.windows.net", "Azure Cache for Redis"),
    (".redis-cloud.com", "Redis Cloud"),
    (".redislabs.com", "Redis Cloud"),
    (".db.ondigitalocean.com", "DigitalOcean Managed Databases"),
    (".aivencloud.com", "Aiven"),
    (".render.com", "Render Key Value"),
    (".railway.internal", "Railway"),
    (".rlwy.net", "Railway"),
)

PROBE_KEY = "mita-redis-mcp-doctor"

ACL_USER = "mita-mcp"
# Printed in the ACL line instead of a password: the user chooses one.
ACL_PASSWORD = "PASSWORD"  # noqa: S105 (a placeholder, printed for the user to replace)
# Sent by the tools, yet left out of the least-privilege user: CONFIG GET also reads
# requirepass and masterauth, CONFIG SET changes the whole server (no ACL rule limits
# either to one parameter), and the key-miss SUBSCRIBE is useless without them. Without
# them check_blacklist cannot read maxmemory-policy and cache_hit_rate cannot observe
# misses; both say so in their answer.
ACL_WITHHELD = frozenset({"CONFIG", "SUBSCRIBE", "UNSUBSCRIBE"})
# Characters special in a Redis ACL key or channel pattern (glob, as stringmatchlen).
_ACL_GLOB = frozenset("*?[]\\")


@dataclass(frozen=True)
class Check:
    status: Status
    name: str
    detail: str


# -- pure verdicts -------------------------------------------------------------------


def configuration(settings: Settings, app: App) -> list[Check]:
    mode = "read-write" if settings.allow_writes else "read-only"
    prefixes = app.scope.describe().split(", ")
    if len(prefixes) > 6:
        prefixes = [*prefixes[:5], f"and {len(prefixes) - 5} more"]
    scope = ", ".join(prefixes)
    checks = [Check("OK", "configuration", f"valid; scope {scope}; {mode}")]
    if settings.allow_all_keys:
        checks.append(
            Check("WARN", "scope", "--allow-all-keys: every key in the database is in scope")
        )
    if settings.allow_writes:
        checks.append(Check("WARN", "writes", "set and delete are enabled (--allow-writes)"))
    return checks


def tls(settings: Settings) -> Check:
    parts = urlsplit(settings.redis_url.get_secret_value())
    target = settings.sentinel
    if target is not None:
        return _sentinel_tls(settings, target.tls, [host for host, _ in target.sentinels])
    if parts.scheme == "rediss":
        if settings.tls_insecure_skip_verify:
            return Check(
                "WARN",
                "TLS",
                "encrypted, but certificate verification is OFF (--tls-insecure-skip-verify)",
            )
        ca = "the CA file given" if settings.tls_ca_file else "the system's CAs"
        return Check("OK", "TLS", f"rediss://, certificate and hostname verified against {ca}")
    if parts.scheme == "unix" or (parts.hostname or "") in ("localhost", "127.0.0.1", "::1"):
        return Check("OK", "TLS", "not used (local connection)")
    return Check(
        "WARN",
        "TLS",
        "not used: the password and every value cross the network in clear (use rediss://)",
    )


def _sentinel_tls(settings: Settings, encrypted: bool, hosts: Sequence[str]) -> Check:
    if encrypted:
        verified = (
            "certificate verification OFF (--tls-insecure-skip-verify)"
            if settings.tls_insecure_skip_verify
            else "certificate and hostname verified"
        )
        status: Status = "WARN" if settings.tls_insecure_skip_verify else "OK"
        return Check(
            status,
            "TLS",
            f"rediss+sentinel://: to the primary, {verified}; the Sentinels are asked in clear",
        )
    if all(host in ("localhost", "127.0.0.1", "::1") for host in hosts):
        return Check("OK", "TLS", "not used (local Sentinels)")
    return Check(
        "WARN",
        "TLS",
        "not used: the password and every value cross the network in clear to the primary "
        "(use rediss+sentinel://)",
    )


def sentinel(view: SentinelView) -> Check:
    """How the Sentinels of a redis+sentinel:// URL see its primary."""
    name, total = view.master, view.sentinels
    silent = total - view.answered
    why = "; ".join(view.problems)
    if view.naming:
        detail = (
            f"sentinel-managed: primary {name} discovered through {view.naming} of "
            f"{total} Sentinel(s)"
        )
        if silent:
            return Check("WARN", "sentinel", f"{detail}; {silent} did not answer ({why})")
        return Check("OK", "sentinel", detail)
    if not view.answered:
        return Check("FAIL", "sentinel", f"none of the {total} Sentinel(s) answered ({why})")
    if view.down:
        return Check(
            "FAIL",
            "sentinel",
            f"the Sentinels report primary {name} down: no primary to talk to until a "
            "replica is promoted",
        )
    known = ", ".join(sorted(view.monitored)) or "none"
    return Check(
        "FAIL",
        "sentinel",
        f"no Sentinel monitors a primary named {name!r} (they monitor: {known}): fix the "
        "name after the Sentinels' addresses in REDIS_URL",
    )


def managed_provider(host: str) -> str | None:
    host = host.lower().rstrip(".")
    for ending, provider in MANAGED_HOSTS:
        if host.endswith(ending):
            return provider
    return None


def server_version(server: dict[str, Any]) -> Check:
    if "dragonfly_version" in server:
        return Check("OK", "server", f"dragonfly {server['dragonfly_version']}")
    name = str(server.get("server_name") or "")
    if "valkey_version" in server or name == "valkey":
        version = server.get("valkey_version") or server.get("redis_version")
        return Check("OK", "server", f"valkey {version}")
    version = str(server.get("redis_version", "unknown"))
    major = version.split(".", 1)[0]
    if major.isdigit() and int(major) < 6:
        return Check("WARN", "server", f"redis {version}: older than 6, no ACL, untested")
    return Check("OK", "server", f"redis {version}")


def mode(
    server: dict[str, Any],
    cluster: dict[str, Any],
    replication: dict[str, Any],
    sentinels: int | None,
    host: str,
    *,
    writes: bool,
    primaries: int | None = None,
) -> Check:
    """``primaries``: how many the cluster client found (``None``: no cluster client)."""
    if server.get("redis_mode") == "sentinel":
        return Check(
            "FAIL",
            "mode",
            "this is a Sentinel, not a data server: reach the primary it monitors with "
            "REDIS_URL=redis+sentinel://HOST:PORT/MASTER_NAME",
        )
    status: Status = "OK"
    parts: list[str] = []
    if primaries is not None:
        parts.append(f"cluster: {primaries} primaries, every tool covers them all")
    elif str(cluster.get("cluster_enabled", "0")) == "1" or server.get("redis_mode") == "cluster":
        status = "WARN"
        parts.append("cluster: only this node's keys are visible (no cluster client)")
    else:
        parts.append("standalone")
    role = replication.get("role")
    if role in ("slave", "replica"):
        parts.append("a replica (reads may lag" + ("; writes will fail)" if writes else ")"))
        status = "WARN" if writes else status
    elif role:
        parts.append(str(role))
    if sentinels:
        parts.append(f"sentinel-managed ({sentinels} Sentinel connection(s) seen)")
    elif sentinels is None:
        parts.append("Sentinel not checked (CLIENT LIST refused)")
    provider = managed_provider(host)
    if provider:
        parts.append(f"managed: {provider}")
    return Check(status, "mode", ", ".join(parts))


def eviction(policy: str | None) -> Check:
    if not policy:
        return Check(
            "WARN",
            "maxmemory-policy",
            "could not be read (INFO memory and CONFIG GET refused): check it in the "
            "provider's console; an evicting policy can drop blacklist entries",
        )
    if policy.startswith("allkeys-"):
        return Check(
            "WARN",
            "maxmemory-policy",
            f"{policy}: when memory is full Redis evicts ANY key, blacklist entries "
            "included, and an evicted entry makes its revoked token valid again",
        )
    if policy.startswith("volatile-"):
        return Check(
            "WARN",
            "maxmemory-policy",
            f"{policy}: when memory is full Redis evicts keys with a TTL, and blacklist "
            "entries have one: an evicted entry makes its revoked token valid again",
        )
    return Check("OK", "maxmemory-policy", f"{policy}: blacklist entries are never evicted")


def probes(settings: Settings, app: App, db: int) -> list[tuple[str, str, Command]]:
    """(kind, what needs it, command) for ACL DRYRUN: each command the tools send (in a
    ``--managed`` mode, only those sent there), with each key command once per allowed
    prefix."""
    keys = [PROBE_KEY] if app.scope.allow_all_keys else [p + PROBE_KEY for p in _prefixes(app)]
    out: list[tuple[str, str, Command]] = []
    for kind, template, needed_by in Backend.REQUIRED_COMMANDS:
        if kind == "write" and not settings.allow_writes:
            continue
        if kind == "cluster" and not app.backend.cluster:
            continue
        words = template.replace("{db}", str(db)).split(" ")
        if not app.backend.sends(tuple(words)):
            continue  # --managed: never sent, so its permission does not matter
        for key in keys if "{key}" in template else [""]:
            out.append((kind, needed_by, tuple(w.replace("{key}", key) for w in words)))
    return out


def permissions(
    user: str, probed: Sequence[tuple[str, str, Command]], replies: Sequence[str | None]
) -> Check:
    denied: dict[str, str] = {}
    unjudged: list[str] = []
    for (kind, needed_by, command), reply in zip(probed, replies, strict=True):
        name = _command_name(command)
        if reply is None:
            unjudged.append(name)
        elif reply.upper() != "OK":
            denied[f"{name} ({needed_by})"] = kind
    worst: Status = "OK"
    if any(kind != "optional" for kind in denied.values()):
        worst = "FAIL"
    elif denied or unjudged:
        worst = "WARN"
    if not denied and not unjudged:
        return Check("OK", "permissions", f"user '{user}' may run every command the tools send")
    parts = []
    if denied:
        parts.append(f"user '{user}' may not run " + ", ".join(denied))
    if unjudged:
        parts.append("could not judge " + ", ".join(sorted(set(unjudged))))
    return Check(worst, "permissions", "; ".join(parts))


def mcp_json(settings: Settings) -> dict[str, Any]:
    """The ``.mcp.json`` for this setup: launched with uvx, REDIS_URL left to the
    environment, every other non-default option as its environment variable."""
    # --compile-bytecode: uv writes the .pyc files once, at install. Without it, where
    # PYTHONDONTWRITEBYTECODE is set (many container images), every start compiles the
    # SDK again: 1.7 s to tools/list instead of 0.84 s, measured here.
    args = ["--compile-bytecode", "mita-redis-mcp"]
    if settings.demo:
        args.append("--demo")
    env: dict[str, str] = {} if settings.demo else {"REDIS_URL": "${REDIS_URL}"}
    defaults = Settings()
    limits = {f.name for f in fields(Limits)}
    for option in OPTIONS:
        # The snippet launches stdio: no HTTP option, and never the bearer token.
        if option.name in ("redis_url", "transport") or option.name.startswith("http_"):
            continue
        source = settings.limits if option.name in limits else settings
        default_source = defaults.limits if option.name in limits else defaults
        value = getattr(source, option.name)
        if value == getattr(default_source, option.name):
            continue
        env[option.env] = _env_value(value)
    server = {"type": "stdio", "command": "uvx", "args": args, "env": env}
    return {"mcpServers": {"mita-redis": server}}


def acl_pattern(prefix: str) -> str:
    """The ACL key pattern matching every key that starts with ``prefix``: its glob
    characters escaped, then ``*``."""
    return "".join("\\" + c if c in _ACL_GLOB else c for c in prefix) + "*"


def acl_command_name(words: Sequence[str]) -> str:
    """The ACL name of a command: ``config|get``, ``scan``."""
    first = words[0].lower()
    if first.upper() in _ACL_SUBCOMMANDS and len(words) > 1:
        return f"{first}|{words[1].lower()}"
    return first


def acl_commands(
    *, writes: bool, managed: str | None = None, withheld: bool = False, cluster: bool = False
) -> list[str]:
    """The ACL names of the commands the tools send in this mode (from
    ``Backend.REQUIRED_COMMANDS``), without ``ACL_WITHHELD`` unless ``withheld``; in a
    ``--managed`` mode, without the commands never sent there; on a Redis Cluster, with
    what its client sends."""
    names: dict[str, None] = {}
    for kind, template, _needed_by in Backend.REQUIRED_COMMANDS:
        words = template.split(" ")
        if (kind == "write" and not writes) or (kind == "cluster" and not cluster):
            continue
        if not offered(managed, words) or (words[0] in ACL_WITHHELD and not withheld):
            continue
        names[acl_command_name(words)] = None
    return list(names)


def acl_setuser(
    prefixes: Sequence[str],
    *,
    writes: bool,
    user: str = ACL_USER,
    password: str = ACL_PASSWORD,
    allow_all_keys: bool = False,
    managed: str | None = None,
    db: int = 0,
    withheld: bool = False,
    cluster: bool = False,
) -> list[str]:
    """The arguments after ``ACL SETUSER`` for a user limited to ``prefixes`` and to the
    commands the tools send (``withheld``: ``ACL_WITHHELD`` too, with the key-miss
    channel). SELECT only for a database other than 0 (redis-py selects it on connect)."""
    keys = ["~*"] if allow_all_keys else [f"~{acl_pattern(p)}" for p in prefixes]
    channels = [f"&__keyevent@{db}__:keymiss"] if withheld else []
    commands = acl_commands(writes=writes, managed=managed, withheld=withheld, cluster=cluster)
    if db:
        commands.append("select")
    return [
        user,
        "on",
        f">{password}",
        "resetkeys",
        *keys,
        "resetchannels",
        *channels,
        "-@all",
        *(f"+{name}" for name in commands),
    ]


def command_line(words: Sequence[str]) -> str:
    """``words`` as one redis-cli line: a word holding a space or a quote is quoted."""
    return " ".join(_cli_word(w) for w in words)


def acl_lines(settings: Settings, app: App) -> list[str]:
    """The least-privilege section of the report: the ACL SETUSER line for this scope
    and mode, and what it leaves out."""
    db = app.backend.db
    options: dict[str, Any] = {
        "writes": settings.allow_writes,
        "allow_all_keys": settings.allow_all_keys,
        "managed": settings.managed,
        "db": db,
        "cluster": app.backend.cluster,
    }
    prefixes = _prefixes(app)
    base = acl_setuser(prefixes, **options)
    extra = [w for w in acl_setuser(prefixes, withheld=True, **options) if w not in base]
    mode = "read-write" if settings.allow_writes else "read-only"
    return [
        f"Least-privilege ACL user for this scope ({mode}); run it as an admin, with a "
        "password of your own:",
        "ACL SETUSER " + command_line(base),
        f"then REDIS_URL={_acl_url(settings, db)}",
        "Left out: CONFIG (CONFIG GET also reads requirepass and masterauth) and the "
        "key-miss SUBSCRIBE: check_blacklist then cannot read maxmemory-policy and "
        "cache_hit_rate cannot observe misses (both say so). To allow them, append: "
        + command_line(extra),
    ]


def _acl_url(settings: Settings, db: int) -> str:
    target = settings.sentinel
    if target is None:
        return f"redis://{ACL_USER}:{ACL_PASSWORD}@HOST:PORT/{db}"
    scheme = "rediss+sentinel" if target.tls else "redis+sentinel"
    return f"{scheme}://{ACL_USER}:{ACL_PASSWORD}@SENTINEL:26379/{target.master}/{db}"


def report(
    target: str,
    checks: Sequence[Check],
    snippet: dict[str, Any],
    *,
    colour: bool,
    acl: Sequence[str] = (),
) -> str:
    lines = [f"mita-redis-mcp doctor: {target}", ""]
    lines += [verdict_line(c.status, c.name, c.detail, colour=colour) for c in checks]
    failed = sum(c.status == "FAIL" for c in checks)
    warned = sum(c.status == "WARN" for c in checks)
    lines += ["", f"{failed} failed, {warned} warning(s), {len(checks) - failed - warned} ok"]
    if acl:
        lines += ["", *acl]
    lines += [
        "",
        ".mcp.json for this setup (REDIS_URL is read from your environment):",
        json.dumps(snippet, indent=2),
    ]
    return "\n".join(lines)


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if hasattr(value, "resolve"):
        return str(value.resolve())
    return str(value)


def _prefixes(app: App) -> list[str]:
    return [p.decode("utf-8", "replace") for p in app.scope.prefixes]


_ACL_SUBCOMMANDS = frozenset(
    {"CONFIG", "OBJECT", "MEMORY", "SLOWLOG", "LATENCY", "CLIENT", "ACL", "CLUSTER"}
)


def _cli_word(word: str) -> str:
    if word and not any(c in word for c in " \t\"'") and word.isprintable():
        return word
    escaped = "".join(
        "\\" + c if c in '\\"' else c if c.isprintable() else f"\\x{ord(c):02x}" for c in word
    )
    return f'"{escaped}"'


def _command_name(command: Command) -> str:
    words = [w.decode() if isinstance(w, bytes) else str(w) for w in command]
    if words[0] in ("CONFIG", "OBJECT", "MEMORY", "SLOWLOG", "LATENCY", "CLIENT", "ACL"):
        return " ".join(words[:2])
    return words[0]


# -- asking Redis ----------------------------------------------------------------------


async def run_checks(settings: Settings, app: App) -> list[Check]:
    """Every check, in order; stops at the first one the rest depend on (reachable,
    authenticated)."""
    checks = configuration(settings, app)
    if settings.demo:
        checks.append(Check("OK", "connection", "demo keyspace: no Redis to check"))
        return checks
    checks.append(tls(settings))
    backend = app.backend
    view = await backend.sentinel_view()
    if view is not None:
        checks.append(sentinel(view))
        if checks[-1].status == "FAIL":
            return checks
    try:
        answered = await backend.authenticates()
    except RedisRefused as exc:
        checks.append(Check("WARN", "reachable", f"answers, but refused PING: {exc}"))
        answered = True
    except BackendError as exc:
        checks.append(Check("FAIL", "reachable", str(exc)))
        return checks
    else:
        checks.append(Check("OK", "reachable", "Redis answers"))
    if not answered:
        checks.append(
            Check(
                "FAIL",
                "authenticated",
                "Redis refused the credentials: check the user and password in REDIS_URL",
            )
        )
        return checks
    try:
        checks += await _server_checks(settings, app)
    except BackendError as exc:
        checks.append(Check("FAIL", "connection", str(exc)))
    return checks


async def _server_checks(settings: Settings, app: App) -> list[Check]:
    backend = app.backend
    checks: list[Check] = []
    user = await backend.acl_whoami()
    password = bool(urlsplit(settings.redis_url.get_secret_value()).password)
    how = "with a password" if password else "without a password"
    checks.append(
        Check("OK", "authenticated", f"as ACL user '{user}', {how}")
        if user
        else Check("OK", "authenticated", f"{how} (ACL WHOAMI refused: user unknown)")
    )
    server = await _section(backend, "server")
    if server is None:
        checks.append(Check("WARN", "server", "INFO refused: version and mode unknown"))
    else:
        checks.append(server_version(server))
        try:
            clients: str | None = await backend.client_list()
        except RedisRefused:
            clients = None
        sentinels = (
            None
            if clients is None
            else sum(" name=sentinel-" in f" {line}" for line in clients.splitlines())
        )
        checks.append(
            mode(
                server,
                await _section(backend, "cluster") or {},
                await _section(backend, "replication") or {},
                sentinels,
                urlsplit(settings.redis_url.get_secret_value()).hostname or "",
                writes=settings.allow_writes,
                primaries=await backend.primaries(),
            )
        )
    checks.append(await _permissions(settings, app, user))
    memory = await _section(backend, "memory") or {}
    policy = memory.get("maxmemory_policy")
    if not policy:
        policy = await backend.config_get("maxmemory-policy")
    checks.append(eviction(str(policy) if policy else None))
    return checks


async def _permissions(settings: Settings, app: App, user: str | None) -> Check:
    if user is None:
        return Check("WARN", "permissions", "could not be checked: ACL WHOAMI was refused")
    probed = probes(settings, app, app.backend.db)
    try:
        replies = await app.backend.acl_dryrun(user, [command for _, _, command in probed])
    except RedisRefused as exc:
        return Check(
            "WARN",
            "permissions",
            f"could not be checked: ACL DRYRUN needs Redis >= 7 and +acl|dryrun ({exc.code})",
        )
    return permissions(user, probed, replies)


async def _section(backend: Backend, name: str) -> dict[str, Any] | None:
    try:
        text = await backend.info(name)
    except RedisRefused:
        return None
    return dict(parse_info(text).get(name, {}))
