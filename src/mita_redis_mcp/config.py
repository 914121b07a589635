"""Settings: from environment variables and command-line flags, validated at start.

Every option is declared once, in ``OPTIONS``: the CLI builds its flags from it, the
README's configuration table documents it, and ``Settings.load`` validates it. A bad
value yields one clear line naming the option; all problems are reported together.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import SecretStr

from mita_redis_mcp.errors import ConfigError
from mita_redis_mcp.schema import Profile, ProfileError, load_profiles
from mita_redis_mcp.schema import scope_prefixes as profile_prefixes

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
# The largest --max-value-bytes: the most of one value a single answer may carry.
MAX_VALUE_WINDOW = 4 * 2**20
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379
# The query parameters a redis+sentinel:// URL may carry: the Sentinels' own credentials.
SENTINEL_PARAMETERS = ("sentinel_username", "sentinel_password")

# Without --profile (and without a profile file), the first user's layout.
DEFAULT_PROFILES: tuple[str, ...] = ("mita",)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
Transport = Literal["stdio", "http"]

# The HTTP transport listens here unless told otherwise: loopback only.
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8765
# Shorter bearer tokens are refused: guessable.
MIN_TOKEN_CHARS = 16
Kind = Literal[
    "url",
    "prefixes",
    "names",
    "bool",
    "int",
    "float",
    "path",
    "level",
    "managed",
    "transport",
    "host",
    "token",
    "audit",
    "file",
]
Managed = Literal["upstash"]
# Where the audit log goes: nowhere (None), stderr, or appended to a file.
AuditTarget = Literal["stderr"] | Path | None


@dataclass(frozen=True)
class Option:
    """One setting: its environment variable, its flag, and its documentation."""

    name: str
    env: str
    flag: str
    kind: Kind
    help: str
    low: float | None = None
    high: float | None = None


OPTIONS: tuple[Option, ...] = (
    Option(
        "redis_url",
        "REDIS_URL",
        "--redis-url",
        "url",
        "redis://, rediss:// (TLS) or unix:// URL, or redis+sentinel:// (rediss+sentinel://) "
        "to find the primary through Sentinels: see README, Sentinel. "
        f"Default {DEFAULT_REDIS_URL}.",
    ),
    Option(
        "cluster",
        "MITA_REDIS_MCP_CLUSTER",
        "--cluster",
        "bool",
        "REDIS_URL is a node of a Redis Cluster: use a cluster client (keys routed by slot, "
        "walks over every primary). Default: detected on the first command (INFO cluster).",
    ),
    Option(
        "prefixes",
        "MITA_REDIS_MCP_PREFIXES",
        "--prefix",
        "prefixes",
        "Key prefixes the server may touch (flag repeatable; env comma-separated). "
        "Default: the prefixes of the active profiles' namespaces.",
    ),
    Option(
        "profiles",
        "MITA_REDIS_MCP_PROFILES",
        "--profile",
        "names",
        "Key-schema profiles the domain tools understand (flag repeatable; env "
        "comma-separated): mita, limits, fastapi-limiter, fastapi-users, flask-session, "
        "starsessions, django, cashews, rq, or one of your profile file. Default: mita.",
    ),
    Option(
        "profile_file",
        "MITA_REDIS_MCP_PROFILE_FILE",
        "--profile-file",
        "path",
        "A TOML file of your own profiles (docs/profiles.md). Without --profile, all of "
        "its profiles are used.",
    ),
    Option(
        "allow_all_keys",
        "MITA_REDIS_MCP_ALLOW_ALL_KEYS",
        "--allow-all-keys",
        "bool",
        "Scope the whole keyspace instead of the prefixes. Announced on stderr.",
    ),
    Option(
        "allow_writes",
        "MITA_REDIS_MCP_ALLOW_WRITES",
        "--allow-writes",
        "bool",
        "Expose the write tools (set, delete). Off by default.",
    ),
    Option(
        "max_value_bytes",
        "MITA_REDIS_MCP_MAX_VALUE_BYTES",
        "--max-value-bytes",
        "int",
        "Most bytes of one value (or element) returned. Default 16384, at most 4 MiB "
        "(an answer carries the value twice, as structured content and as text: a larger "
        "window would pass the server's 150 MB memory bound, and no model reads it).",
        1,
        MAX_VALUE_WINDOW,
    ),
    Option(
        "max_items",
        "MITA_REDIS_MCP_MAX_ITEMS",
        "--max-items",
        "int",
        "Most items (keys, fields, members, entries) returned by one call. Default 100.",
        1,
        10_000,
    ),
    Option(
        "scan_budget",
        "MITA_REDIS_MCP_SCAN_BUDGET",
        "--scan-budget",
        "int",
        "Most keys one call asks Redis to examine (sum of SCAN COUNT hints). Default 10000.",
        1,
        10_000_000,
    ),
    Option(
        "command_timeout",
        "MITA_REDIS_MCP_COMMAND_TIMEOUT",
        "--command-timeout",
        "float",
        "Seconds one Redis command may take before the call fails. Default 5.",
        0.01,
        300,
    ),
    Option(
        "command_budget",
        "MITA_REDIS_MCP_COMMAND_BUDGET",
        "--command-budget",
        "int",
        "Most Redis commands one tool call may send (pipelined ones each count); the call "
        "stops before the command that would exceed it. Default unlimited.",
        1,
        10_000_000,
    ),
    Option(
        "managed",
        "MITA_REDIS_MCP_MANAGED",
        "--managed",
        "managed",
        "upstash: never send the commands Upstash lacks (OBJECT, MEMORY, SLOWLOG, LATENCY, "
        "CLIENT LIST, CONFIG other than notify-keyspace-events); the tools say what is "
        "missing instead. Default: none.",
    ),
    Option(
        "tls_ca_file",
        "MITA_REDIS_MCP_TLS_CA_FILE",
        "--tls-ca-file",
        "path",
        "CA bundle (PEM) to verify the server's certificate with (rediss://).",
    ),
    Option(
        "tls_cert_file",
        "MITA_REDIS_MCP_TLS_CERT_FILE",
        "--tls-cert-file",
        "path",
        "Client certificate (PEM) for mutual TLS.",
    ),
    Option(
        "tls_key_file",
        "MITA_REDIS_MCP_TLS_KEY_FILE",
        "--tls-key-file",
        "path",
        "Private key (PEM) of the client certificate.",
    ),
    Option(
        "tls_insecure_skip_verify",
        "MITA_REDIS_MCP_TLS_INSECURE_SKIP_VERIFY",
        "--tls-insecure-skip-verify",
        "bool",
        "DANGEROUS: accept any server certificate. Announced on stderr.",
    ),
    Option(
        "audit",
        "MITA_REDIS_MCP_AUDIT",
        "--audit",
        "audit",
        "Audit log, one JSON line per tool call (tool, keys touched with credentials "
        "redacted, commands, duration, outcome; never values): off, stderr, or a file "
        "path (created with mode 0600, appended to). Default off.",
    ),
    Option(
        "journal",
        "MITA_REDIS_MCP_JOURNAL",
        "--journal",
        "file",
        "The undo journal (JSON lines, mode 0600): the prior state of every key a write "
        "tool changes. Default $XDG_STATE_HOME/mita-redis-mcp/journal.jsonl, else "
        "~/.local/state/mita-redis-mcp/journal.jsonl (in memory with --demo).",
    ),
    Option(
        "journal_max_bytes",
        "MITA_REDIS_MCP_JOURNAL_MAX_BYTES",
        "--journal-max-bytes",
        "int",
        "Most bytes the undo journal keeps; the oldest changes are dropped beyond it, and "
        "a write whose prior state needs more than half of it is refused. Default 67108864 "
        "(64 MiB).",
        1024 * 1024,
        16 * 1024**3,
    ),
    Option(
        "log_level",
        "MITA_REDIS_MCP_LOG_LEVEL",
        "--log-level",
        "level",
        "Log level on stderr: DEBUG, INFO, WARNING or ERROR. Default INFO.",
    ),
    Option(
        "transport",
        "MITA_REDIS_MCP_TRANSPORT",
        "--transport",
        "transport",
        "stdio (what .mcp.json launches) or http (Streamable HTTP on --host and --port, "
        "path /mcp). Default stdio.",
    ),
    Option(
        "http_host",
        "MITA_REDIS_MCP_HTTP_HOST",
        "--host",
        "host",
        f"Address the HTTP transport listens on. Default {DEFAULT_HTTP_HOST}; any "
        "non-loopback address needs a bearer token.",
    ),
    Option(
        "http_port",
        "MITA_REDIS_MCP_HTTP_PORT",
        "--port",
        "int",
        f"Port the HTTP transport listens on. Default {DEFAULT_HTTP_PORT}.",
        1,
        65_535,
    ),
    Option(
        "http_token",
        "MITA_REDIS_MCP_HTTP_TOKEN",
        "--http-token-file",
        "token",
        "Bearer token every HTTP request must carry (env: the token; flag: a file holding "
        f"it). At least {MIN_TOKEN_CHARS} characters. Required to listen on a non-loopback "
        "address. Never logged.",
    ),
    Option(
        "http_allowed_hosts",
        "MITA_REDIS_MCP_HTTP_ALLOWED_HOSTS",
        "--http-allowed-host",
        "names",
        "Host names clients reach the HTTP transport by, besides localhost and the listening "
        "address (flag repeatable; env comma-separated). Other Host and Origin headers are "
        "refused (DNS rebinding). Required with --host 0.0.0.0 or ::.",
    ),
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Limits:
    """Bounds on every answer and every Redis walk."""

    max_value_bytes: int = 16_384
    max_items: int = 100
    scan_budget: int = 10_000
    command_timeout: float = 5.0
    # None: unlimited. Managed Redis bills each command; the scan budget bounds the walk.
    command_budget: int | None = None


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start. Build it with ``Settings.load``."""

    redis_url: SecretStr = field(default_factory=lambda: SecretStr(DEFAULT_REDIS_URL))
    # Empty: the active profiles' prefixes (see ``scope_prefixes``).
    prefixes: tuple[str, ...] = ()
    profiles: tuple[str, ...] | None = None
    profile_file: Path | None = None
    allow_all_keys: bool = False
    allow_writes: bool = False
    managed: Managed | None = None
    limits: Limits = field(default_factory=Limits)
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_insecure_skip_verify: bool = False
    cluster: bool = False
    log_level: LogLevel = "INFO"
    audit: AuditTarget = None
    transport: Transport = "stdio"
    http_host: str = DEFAULT_HTTP_HOST
    http_port: int = DEFAULT_HTTP_PORT
    http_token: SecretStr | None = None
    http_allowed_hosts: tuple[str, ...] = ()
    journal: Path | None = None
    journal_max_bytes: int = 64 * 1024 * 1024
    demo: bool = False

    @property
    def safe_url(self) -> str:
        """The Redis URL with its password replaced by ``***``: safe to log and show."""
        return redact_url(self.redis_url.get_secret_value())

    @property
    def sentinel(self) -> SentinelTarget | None:
        """What a redis+sentinel:// URL names; ``None`` for any other URL."""
        url = self.redis_url.get_secret_value()
        return sentinel_target(url) if url.startswith(SENTINEL_SCHEMES) else None

    def load_profiles(self) -> list[Profile]:
        """The active key-schema profiles: those named, else the profile file's, else
        ``DEFAULT_PROFILES``. Raises ``ProfileError``."""
        names = self.profiles
        if names is None:
            names = () if self.profile_file is not None else DEFAULT_PROFILES
        return load_profiles(names, self.profile_file)

    def scope_prefixes(self, profiles: Sequence[Profile]) -> tuple[str, ...]:
        """The prefixes given explicitly, else those of ``profiles``' namespaces."""
        return self.prefixes or profile_prefixes(profiles)

    @classmethod
    def load(
        cls,
        flags: Mapping[str, object | None] | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        demo: bool = False,
    ) -> Settings:
        """Merge flags over environment variables over defaults, and validate.

        ``flags`` maps option names to values already typed by argparse (``None`` or
        absent: not given). Raises ``ConfigError`` listing every bad value.
        """
        flags = flags or {}
        env = os.environ if environ is None else environ
        problems: list[str] = []
        values: dict[str, object] = {}
        for option in OPTIONS:
            given = flags.get(option.name)
            if given is not None and given is not False and given != []:
                raw: object = given
                source = option.flag
            elif option.env in env:
                raw = env[option.env]
                source = option.env
            else:
                continue
            try:
                values[option.name] = _parse(option, raw, source)
            except ValueError as exc:
                problems.append(str(exc))

        limit_names = (
            "max_value_bytes",
            "max_items",
            "scan_budget",
            "command_timeout",
            "command_budget",
        )
        bounds = {name: values.pop(name) for name in limit_names if name in values}
        limits = Limits(**bounds)  # type: ignore[arg-type]
        settings = cls(limits=limits, demo=demo, **values)  # type: ignore[arg-type]
        try:
            profiles = settings.load_profiles()
        except ProfileError as exc:
            problems.extend(exc.problems)
            profiles = []
        problems.extend(settings._cross_checks(profiles))
        if problems:
            raise ConfigError(problems)
        return settings

    def _cross_checks(self, profiles: Sequence[Profile]) -> list[str]:
        problems: list[str] = []
        scheme = urlsplit(self.redis_url.get_secret_value()).scheme
        tls_files = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        tls = scheme in ("rediss", "rediss+sentinel")
        if not tls and (any(tls_files) or self.tls_insecure_skip_verify):
            problems.append("TLS options are set but REDIS_URL is not a rediss:// URL")
        if self.cluster and scheme not in ("redis", "rediss"):
            problems.append("--cluster needs a redis:// or rediss:// URL of one cluster node")
        elif self.cluster and urlsplit(self.redis_url.get_secret_value()).path.strip("/") not in (
            "",
            "0",
        ):
            problems.append("--cluster: a Redis Cluster has only database 0 (end REDIS_URL in /0)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("--tls-cert-file and --tls-key-file must be given together")
        if self.tls_insecure_skip_verify and self.tls_ca_file is not None:
            problems.append("--tls-insecure-skip-verify contradicts --tls-ca-file: choose one")
        if not self.allow_all_keys and not self.scope_prefixes(profiles):
            problems.append(
                "no key prefix is configured: give --prefix, a profile with prefixes, "
                "or --allow-all-keys"
            )
        if self.transport == "http":
            problems.extend(self._http_checks())
        return problems

    def _http_checks(self) -> list[str]:
        problems: list[str] = []
        host = self.http_host
        if self.http_token is None and not is_loopback_host(host):
            problems.append(
                f"refusing to listen on {host} without a bearer token: set "
                "MITA_REDIS_MCP_HTTP_TOKEN or --http-token-file, or listen on 127.0.0.1"
            )
        if is_wildcard_host(host) and not self.http_allowed_hosts:
            problems.append(
                f"--host {host} listens on every address: name the host names clients use "
                "with --http-allowed-host (requests for any other Host are refused)"
            )
        return problems


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard_host(host: str) -> bool:
    """0.0.0.0 or ``::``: every address of the machine."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


@dataclass(frozen=True)
class SentinelTarget:
    """A redis+sentinel:// URL: where the Sentinels are, the name they know the primary
    by, and the credentials of each (the primary's in the userinfo, the Sentinels' own
    in ``?sentinel_username=`` and ``?sentinel_password=``)."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    sentinel_username: str | None = None
    sentinel_password: SecretStr | None = None


def sentinel_target(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]``
    (``rediss+sentinel://``: TLS to the primary). Raises ``ValueError`` with a message that
    quotes no part of the URL but the parameter names."""
    scheme, _, rest = url.partition("://")
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    sentinels = tuple(_sentinel_address(item, n) for n, item in enumerate(hosts.split(","), 1))
    master, _, db = unquote(path).strip("/").partition("/")
    if not master:
        raise ValueError(
            "a redis+sentinel:// URL names the primary after the Sentinels' addresses: "
            "redis+sentinel://HOST:26379/MASTER_NAME"
        )
    if not (db or "0").isascii() or not (db or "0").isdigit():
        raise ValueError(
            "the database (after the primary's name) must be a number (percent-encode "
            "any / ? # @ in the password)"
        )
    params = parse_qs(query, keep_blank_values=True)
    # Not echoed: after a password's unencoded '&', a "parameter" is the password's tail.
    if any(name not in SENTINEL_PARAMETERS for name in params):
        raise ValueError(
            "a redis+sentinel:// URL takes only the parameters "
            f"{' and '.join(SENTINEL_PARAMETERS)} (percent-encode any & = in a password)"
        )
    if fragment:
        raise ValueError(
            "a redis+sentinel:// URL has no #fragment (percent-encode # in a password)"
        )
    user, has_password, password = userinfo.partition(":") if at else ("", "", "")
    sentinel_password = params.get("sentinel_password", [""])[-1]
    return SentinelTarget(
        sentinels=sentinels,
        master=master,
        db=int(db or 0),
        tls=scheme == "rediss+sentinel",
        username=unquote(user) or None,
        password=SecretStr(unquote(password)) if has_password else None,
        sentinel_username=params.get("sentinel_username", [""])[-1] or None,
        sentinel_password=SecretStr(sentinel_password) if sentinel_password else None,
    )


def _sentinel_address(item: str, number: int) -> tuple[str, int]:
    host, port = item, ""
    if item.startswith("["):
        host, bracket, port = item[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError(f"Sentinel address {number} is malformed (IPv6: [::1]:26379)")
        port = port[1:]
    elif ":" in item:
        host, _, port = item.rpartition(":")
    if not host:
        raise ValueError(
            f"Sentinel address {number} has no host: list them as HOST:PORT,HOST:PORT "
            "(percent-encode any / ? # @ in a password)"
        )
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65_536):
        raise ValueError(f"Sentinel address {number} has a bad port (1 to 65535)")
    return unquote(host), int(port or DEFAULT_SENTINEL_PORT)


def redact_url(url: str) -> str:
    """Replace the passwords of a URL (userinfo, ``?password=``, ``?sentinel_password=``)
    with ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        # A bare userinfo may be a password too (redis://secret@host): hide it whole.
        netloc = f"{user}:***@{host}" if has_password else f"***@{host}"
    query = "&".join(
        f"{name}=***" if (name := pair.partition("=")[0].lower()).endswith("password") else pair
        for pair in parts.query.split("&")
        if pair
    )
    # Not SplitResult.geturl(): it drops the '//' of a unix:// URL (empty netloc).
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _parse(option: Option, raw: object, source: str) -> object:
    match option.kind:
        case "url":
            return _parse_url(str(raw), source)
        case "prefixes":
            return _parse_prefixes(raw, source)
        case "names":
            return _parse_names(raw, source)
        case "bool":
            return _parse_bool(raw, source)
        case "int" | "float":
            return _parse_number(option, raw, source)
        case "path":
            return _parse_path(str(raw), source)
        case "file":
            path = Path(str(raw)).expanduser()
            if path.is_dir():
                raise ValueError(f"{source}: {str(raw)!r} is a directory, not a file")
            return path
        case "audit":
            return _parse_audit(str(raw), source)
        case "level":
            level = str(raw).upper()
            if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
                raise ValueError(f"{source} must be DEBUG, INFO, WARNING or ERROR")
            return level
        case "transport":
            transport = str(raw).strip().lower()
            if transport not in ("stdio", "http"):
                raise ValueError(f"{source} must be stdio or http, not {str(raw)[:20]!r}")
            return transport
        case "host":
            return _parse_host(str(raw), source)
        case "token":
            return _parse_token(str(raw), source, from_file=source == option.flag)
        case "managed":
            provider = str(raw).strip().lower()
            if provider in ("", "none"):
                return None
            if provider != "upstash":
                raise ValueError(f"{source} must be upstash (or none), not {str(raw)[:20]!r}")
            return provider


def _parse_url(url: str, source: str) -> SecretStr:
    if url.startswith("${") and url.endswith("}"):
        raise ValueError(
            f"{source} is the literal text {url}: the variable it names was not set in the "
            "environment that launched the server (export it before starting the client)"
        )
    if url.startswith(tuple(f"{scheme}://" for scheme in SENTINEL_SCHEMES)):
        try:
            sentinel_target(url)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        return SecretStr(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{source} is not a valid URL (port or address malformed)") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"{source} must start with redis://, rediss://, unix:// or redis+sentinel://"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"{source}: a unix:// URL needs a socket path")
        db = parse_qs(parts.query).get("db", ["0"])[0]
    else:
        if not parts.hostname:
            raise ValueError(f"{source} has no host")
        if port == 0:
            raise ValueError(f"{source} has port 0")
        db = parts.path.lstrip("/") or "0"
    if not (db.isascii() and db.isdigit()):
        # Not echoed: after a password's unencoded '/', the "database" is the password's tail.
        raise ValueError(
            f"{source}: the database must be a number (percent-encode any / ? # @ in the password)"
        )
    return SecretStr(url)


def _parse_prefixes(raw: object, source: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else str(raw).split(",")
    prefixes = tuple(str(p).strip() for p in items if str(p).strip())
    for prefix in prefixes:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in prefix):
            raise ValueError(f"{source}: prefix {prefix!r} contains a control character")
        if len(prefix.encode()) > 256:
            raise ValueError(f"{source}: prefix {prefix[:20]!r}... is longer than 256 bytes")
    if not prefixes:
        raise ValueError(f"{source} is empty: give at least one prefix")
    return prefixes


def _parse_names(raw: object, source: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else str(raw).split(",")
    names = tuple(str(n).strip() for n in items if str(n).strip())
    if not names:
        raise ValueError(f"{source} is empty: name at least one profile")
    return names


def _parse_bool(raw: object, source: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{source} must be true or false (1/0, yes/no), not {str(raw)[:20]!r}")


def _parse_number(option: Option, raw: object, source: str) -> int | float:
    try:
        value: int | float = int(str(raw)) if option.kind == "int" else float(str(raw))
    except ValueError:
        kind = "a whole number" if option.kind == "int" else "a number"
        raise ValueError(f"{source} must be {kind}, not {str(raw)[:20]!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{source} must be a finite number")
    if (
        option.low is not None
        and option.high is not None
        and not (option.low <= value <= option.high)
    ):
        low, high = (
            str(int(bound)) if bound == int(bound) else f"{bound:g}"
            for bound in (option.low, option.high)
        )
        raise ValueError(f"{source} must be between {low} and {high}")
    return value


def _parse_path(raw: str, source: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ValueError(f"{source}: no readable file at {raw!r}")
    return path


def _parse_host(raw: str, source: str) -> str:
    host = raw.strip().strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        if not host or not all(
            label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
            for label in labels
        ):
            raise ValueError(f"{source} must be an IP address or a host name") from None
    return host


def _parse_token(raw: str, source: str, *, from_file: bool) -> SecretStr:
    # Never echo the token, nor a file's content, in a message.
    if from_file:
        path = Path(raw).expanduser()
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise ValueError(f"{source}: cannot read a token from {str(path)!r}") from None
    token = raw.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{source}: the token must have at least {MIN_TOKEN_CHARS} characters")
    if not all("!" <= c <= "~" for c in token):
        raise ValueError(
            f"{source}: the token must be printable ASCII without spaces (it goes in a header)"
        )
    return SecretStr(token)


def _parse_audit(raw: str, source: str) -> AuditTarget:
    text = raw.strip()
    if text.lower() in ("", "off"):
        return None
    if text.lower() == "stderr":
        return "stderr"
    path = Path(text).expanduser()
    if path.is_dir():
        raise ValueError(f"{source}: {raw!r} is a directory; give a file path, stderr or off")
    if not path.parent.is_dir():
        raise ValueError(f"{source}: no directory {str(path.parent)!r} for the audit log")
    return path
