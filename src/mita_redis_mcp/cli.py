"""Command line: flags -> Settings; logging on stderr; serve, call, doctor or demo.

    mita-redis-mcp [serve] [options]   the MCP server on stdio (what .mcp.json launches)
    mita-redis-mcp serve --demo        the same server over the built-in demo keyspace
    mita-redis-mcp serve --transport http [--host H --port P]
                                       the same server over Streamable HTTP (/mcp)
    mita-redis-mcp call TOOL [--arg k=v] [--json '{...}'] [--output json]
                                       one tool, from the terminal, same scope and safety
    mita-redis-mcp doctor              check the configuration and the connection
    mita-redis-mcp demo                a short tour of the tools on the demo keyspace

In ``serve``, stdout carries the MCP protocol and nothing else: every log line goes
to stderr (over HTTP as well).

Exit codes: 0 success; 1 a tool error (``call``) or a failed check (``doctor``);
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from mita_redis_mcp import __version__
from mita_redis_mcp.config import OPTIONS, Settings
from mita_redis_mcp.errors import ConfigError
from mita_redis_mcp.terminal import (
    ProgressBar,
    render_answer,
    render_json,
    verdict_line,
    wants_colour,
)

if TYPE_CHECKING:
    from mcp.types import CallToolResult

log = logging.getLogger("mita_redis_mcp")


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: the subcommand's parser must not overwrite, with its defaults, the
    # flags given before the subcommand (`mita-redis-mcp --prefix app: serve`).
    options = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for option in OPTIONS:
        if option.kind == "bool":
            options.add_argument(
                option.flag,
                dest=option.name,
                action="store_true",
                help=f"{option.help} [{option.env}]",
            )
        elif option.kind in ("prefixes", "names"):
            options.add_argument(
                option.flag,
                dest=option.name,
                action="append",
                metavar="PREFIX" if option.kind == "prefixes" else "NAME",
                help=f"{option.help} [{option.env}]",
            )
        else:
            options.add_argument(
                option.flag, dest=option.name, metavar="VALUE", help=f"{option.help} [{option.env}]"
            )
    parser = argparse.ArgumentParser(
        prog="mita-redis-mcp",
        description="A safe, prefix-scoped MCP server for debugging a production Redis.",
        parents=[options],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--demo", action="store_true", help="Serve the built-in demo keyspace (no Redis needed)"
    )
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser(
        "serve", parents=[options], help="Run the MCP server (stdio, or --transport http)"
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        default=argparse.SUPPRESS,
        help="Serve the built-in demo keyspace (no Redis needed)",
    )
    commands.add_parser(
        "demo", parents=[options], help="A short tour of the tools on the demo keyspace"
    )
    _add_call(commands, options)
    doctor = commands.add_parser(
        "doctor",
        parents=[options],
        help="Check the configuration and the connection; print the .mcp.json snippet",
        description="Check the configuration, the connection (reachable, TLS, "
        "authentication, server, mode, ACL permissions for every command the tools send, "
        "maxmemory-policy) and print the .mcp.json snippet for this setup. Exit code 1 "
        "when a check fails, 2 when the configuration is invalid.",
    )
    doctor.add_argument(
        "--demo", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    return parser


def _add_call(commands: Any, options: argparse.ArgumentParser) -> None:
    call = commands.add_parser(
        "call",
        parents=[options],
        help="Run one tool from the terminal, with the server's scope and safety",
        description="Run one tool through an in-process MCP client, with exactly the "
        "server's scope and safety (write tools refused unless --allow-writes), and print "
        "its answer: tables for lists (keys, sessions, limiters), coloured JSON otherwise. "
        "Exit code 0 on success, 1 when the tool answers with an error, 2 on bad usage.",
        epilog="examples:\n"
        "  mita-redis-mcp call keys --arg pattern='rate_limit:*'\n"
        "  mita-redis-mcp call get --arg key=mita:blacklist:metrics --output json\n"
        '  mita-redis-mcp call check_blacklist --json \'{"jti": "..."}\'\n'
        "  mita-redis-mcp --demo call keyspace_summary",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    call.add_argument("tool", help="The tool's name (as in tools/list)")
    call.add_argument(
        "--arg",
        dest="call_args",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="One argument (repeatable). VALUE is parsed as JSON when it parses "
        "(numbers, true/false, lists, objects), else taken as a string",
    )
    call.add_argument(
        "--json",
        dest="call_json",
        metavar="OBJECT",
        help="The arguments as one JSON object (input); --arg values override its keys",
    )
    call.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="text: tables and coloured JSON for people (default); json: the answer as "
        "plain JSON on stdout, for scripts",
    )
    call.add_argument(
        "--demo",
        action="store_true",
        default=argparse.SUPPRESS,
        help="Run against the built-in demo keyspace (no Redis needed)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    flags = {option.name: getattr(args, option.name, None) for option in OPTIONS}
    try:
        settings = Settings.load(
            flags, demo=command == "demo" or bool(getattr(args, "demo", False))
        )
    except ConfigError as exc:
        sys.stderr.write(f"mita-redis-mcp: {exc}\n")
        if command == "doctor":
            sys.stdout.write(
                "\n".join(
                    verdict_line("FAIL", "configuration", p, colour=wants_colour(sys.stdout))
                    for p in exc.problems
                )
                + "\n"
            )
        return 2
    # call, doctor and the demo tour talk to a person: only warnings, unless a log level
    # is asked for.
    quiet = command in ("call", "doctor", "demo") and not (
        flags.get("log_level") or os.environ.get("MITA_REDIS_MCP_LOG_LEVEL")
    )
    logging.basicConfig(
        stream=sys.stderr,
        level="WARNING" if quiet else settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if command != "serve":
        started()
    if command == "demo":
        anyio.run(_tour, settings)
        return 0
    if command == "call":
        return _call(args, settings)
    if command == "doctor":
        return anyio.run(_doctor, settings)
    _announce(settings)
    anyio.run(_serve, settings)
    return 0


def _announce(settings: Settings) -> None:
    target = "the built-in demo keyspace" if settings.demo else settings.safe_url
    mode = "read-write" if settings.allow_writes else "read-only"
    if settings.transport == "http":
        from mita_redis_mcp.http import endpoint

        where = endpoint(settings)
        if settings.http_token is None:
            log.warning("no bearer token: any local process can connect to %s", where)
    else:
        where = "stdio"
    log.info("mita-redis-mcp %s serving %s (%s) on %s", __version__, target, mode, where)
    if settings.allow_all_keys:
        log.warning("--allow-all-keys: every key in the database is in scope")
    else:
        prefixes = settings.scope_prefixes(settings.load_profiles())
        log.info("scope: %s", ", ".join(prefixes))
    if settings.tls_insecure_skip_verify:
        log.warning("--tls-insecure-skip-verify: the server's TLS certificate is NOT verified")


async def _serve(settings: Settings) -> None:
    from mita_redis_mcp.app import App
    from mita_redis_mcp.server import build_server

    app = App.from_settings(settings)
    if app.backend.demo:
        from mita_redis_mcp.demo import seed

        await seed(app.backend)
    server = build_server(app)
    started()
    if settings.transport == "http":
        from mita_redis_mcp.http import serve_http

        await serve_http(server, settings)
    else:
        await server.run_stdio_async()


def started() -> None:
    """Start-up is over: if ``__main__`` turned the cyclic collector off for it,
    freeze what start-up made (later collections leave it out) and turn it back on."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


async def _tour(settings: Settings) -> None:
    from mcp import Client

    from mita_redis_mcp.app import App
    from mita_redis_mcp.demo import (
        BLOCKED_IP,
        BLOCKED_UA,
        DEMO_CACHE_KEY,
        DEMO_JTI,
        DEMO_USER,
        seed,
    )
    from mita_redis_mcp.server import build_server

    app = App.from_settings(settings)
    await seed(app.backend)
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("How full is this Redis?", "info", {"section": "keyspace"}),
        ("Which rate-limit keys exist?", "keys", {"pattern": "rate_limit:*"}),
        (
            "Why is this user getting 429s on login? (IP and User-Agent from the ticket)",
            "inspect_rate_limits",
            {"identifier": BLOCKED_IP, "user_agent": BLOCKED_UA, "endpoint": "auth_login"},
        ),
        ("Was this token revoked?", "check_blacklist", {"jti": DEMO_JTI}),
        ("Who is logged in as this user?", "list_sessions", {"user": DEMO_USER}),
        ("What does this cache entry hold?", "get", {"key": DEMO_CACHE_KEY}),
        ("A key outside the scope is refused:", "get", {"key": "session:do-not-show"}),
        ("Deleting needs writes switched on:", "delete", {"keys": ["mita:blacklist:metrics"]}),
    ]
    out = sys.stdout
    out.write(f"mita-redis-mcp {__version__}: demo keyspace (no Redis needed)\n")
    out.write(f"scope: {app.scope.describe()}\n")
    async with Client(build_server(app)) as client:
        tools = await client.list_tools()
        out.write("tools: " + ", ".join(t.name for t in tools.tools) + "\n")
        for question, name, arguments in steps:
            result = await client.call_tool(name, arguments)
            out.write(f"\n# {question}\n> {name} {json.dumps(arguments)}\n")
            if result.is_error:
                text = " ".join(getattr(c, "text", "") for c in result.content)
                out.write(f"refused: {text}\n")
            else:
                out.write(json.dumps(result.structured_content, indent=2) + "\n")


# -- call ----------------------------------------------------------------------------


class UsageError(Exception):
    """Bad command-line input to ``call``: exit code 2."""


def parse_arguments(pairs: Sequence[str], raw_json: str | None) -> dict[str, Any]:
    """``--json`` then each ``--arg KEY=VALUE`` (VALUE as JSON when it parses, else a
    string). Raises ``UsageError``."""
    arguments: dict[str, Any] = {}
    if raw_json is not None:
        try:
            loaded = json.loads(raw_json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--json is not valid JSON: {exc.msg} (at {exc.pos})") from None
        if not isinstance(loaded, dict):
            raise UsageError('--json must be a JSON object, e.g. \'{"key": "app:1"}\'')
        arguments.update(loaded)
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--arg {pair!r}: expected KEY=VALUE")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        arguments[name.strip()] = value
    return arguments


def _call(args: argparse.Namespace, settings: Settings) -> int:
    from mita_redis_mcp.server import TOOL_SPECS

    try:
        arguments = parse_arguments(args.call_args, args.call_json)
    except UsageError as exc:
        sys.stderr.write(f"mita-redis-mcp call: {exc}\n")
        return 2
    names = [spec.name for spec in TOOL_SPECS]
    if args.tool not in names:
        sys.stderr.write(f"mita-redis-mcp call: no tool {args.tool!r}; tools: {', '.join(names)}\n")
        return 2
    result = anyio.run(_run_tool, settings, args.tool, arguments)
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content).strip()
        text = text.removeprefix(f"Error executing tool {args.tool}: ")
        sys.stderr.write(f"mita-redis-mcp call {args.tool}: {text or 'the tool failed'}\n")
        return 1
    answer: Any = result.structured_content
    if answer is None:
        answer = " ".join(getattr(block, "text", "") for block in result.content)
    if args.output == "json":
        sys.stdout.write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
    elif isinstance(answer, dict):
        sys.stdout.write(render_answer(answer, colour=wants_colour(sys.stdout)) + "\n")
    else:
        sys.stdout.write(render_json(answer, colour=wants_colour(sys.stdout)) + "\n")
    return 0


async def _run_tool(settings: Settings, name: str, arguments: dict[str, Any]) -> CallToolResult:
    from mcp import Client

    from mita_redis_mcp.app import App
    from mita_redis_mcp.server import build_server

    app = App.from_settings(settings)
    if app.backend.demo:
        from mita_redis_mcp.demo import seed

        await seed(app.backend)
    # The bar only on a terminal: in a pipe or a log, progress lines would be noise.
    bar = ProgressBar(sys.stderr, name) if sys.stderr.isatty() else None
    try:
        async with Client(build_server(app)) as client:
            return await client.call_tool(name, arguments, progress_callback=bar)
    finally:
        if bar is not None:
            bar.close()


# -- doctor --------------------------------------------------------------------------


async def _doctor(settings: Settings) -> int:
    from mita_redis_mcp import doctor
    from mita_redis_mcp.app import App

    app = App.from_settings(settings)
    try:
        checks = await doctor.run_checks(settings, app)
    finally:
        await app.backend.close()
    target = "the built-in demo keyspace" if settings.demo else settings.safe_url
    acl = () if settings.demo else doctor.acl_lines(settings, app)
    sys.stdout.write(
        doctor.report(
            target, checks, doctor.mcp_json(settings), colour=wants_colour(sys.stdout), acl=acl
        )
        + "\n"
    )
    return 1 if any(check.status == "FAIL" for check in checks) else 0
