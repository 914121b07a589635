"""Command line: flags -> Settings; logging on stderr; serve or demo.

    mita-redis-mcp [serve] [options]   the MCP server on stdio (what .mcp.json launches)
    mita-redis-mcp serve --demo        the same server over the built-in demo keyspace
    mita-redis-mcp demo                a short tour of the tools on the demo keyspace

In ``serve``, stdout carries the MCP protocol and nothing else: every log line goes
to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from mita_redis_mcp import __version__
from mita_redis_mcp.config import OPTIONS, Settings
from mita_redis_mcp.errors import ConfigError

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
    serve = commands.add_parser("serve", parents=[options], help="Run the MCP server on stdio")
    serve.add_argument(
        "--demo",
        action="store_true",
        default=argparse.SUPPRESS,
        help="Serve the built-in demo keyspace (no Redis needed)",
    )
    commands.add_parser(
        "demo", parents=[options], help="A short tour of the tools on the demo keyspace"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    flags = {option.name: getattr(args, option.name, None) for option in OPTIONS}
    try:
        settings = Settings.load(flags, demo=command == "demo" or bool(args.demo))
    except ConfigError as exc:
        sys.stderr.write(f"mita-redis-mcp: {exc}\n")
        return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if command == "demo":
        anyio.run(_tour, settings)
        return 0
    _announce(settings)
    anyio.run(_serve, settings)
    return 0


def _announce(settings: Settings) -> None:
    target = "the built-in demo keyspace" if settings.demo else settings.safe_url
    mode = "read-write" if settings.allow_writes else "read-only"
    log.info("mita-redis-mcp %s serving %s (%s) on stdio", __version__, target, mode)
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
    await build_server(app).run_stdio_async()


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
