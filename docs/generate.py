"""Generate docs/tools.md from the code: every tool's description, inputs and a real answer.

    python docs/generate.py          write docs/tools.md
    python docs/generate.py --check  exit 1 when docs/tools.md is not what the code gives

For every tool the server registers (``server.TOOL_SPECS``, in ``tools/list`` order with
writes on), the page shows the description the model reads, the input schema the MCP SDK
builds (read through ``mcp.Client(build_server(app)).list_tools()``), and one or more
example calls with their answers. Each example is called in process, through the same
client, on a freshly seeded demo keyspace: ``App.from_settings(Settings.load(...,
environ={}, demo=True))`` filled with ``demo.demo_commands()``; a write tool's example
runs with ``allow_writes``. An answer the demo cannot give (its fake server has no
SLOWLOG, LATENCY or MEMORY) is shown as the demo gives it, refusal note included.

Answers depend on the clock: the demo keyspace is written relative to "now" (the fake
server's expiries and TIME follow the real clock), so TTLs shrink and dates move between
runs. The rendered answers are normalised so that the page is the same on every run and
every machine (``normalise`` is the one place this happens):

- countdowns (``ttl_seconds``, ``retry_after_seconds``, ``reset_seconds``) are rounded up
  to whole seconds: each example runs within a second of seeding, so they read as at the
  moment the keyspace was written (959.87 -> 960.0);
- measured durations (``window_seconds``, ``lookups_per_second``) are rounded to whole
  units (a 1-second sampling window measured as 1.003 -> 1.0);
- clock readings given as unix times (``server_time``, ``started_at``, ``latest_at``)
  read ``"<unix time>"``; a connection's ``age_seconds`` and ``idle_seconds`` read
  ``"<seconds>"``;
- a delete_pattern ``confirm_token`` (signed with a secret of the process, with an
  expiry) reads ``"<token>"``;
- every ISO 8601 date-time inside a string (``until``, ``expires_at``, ``issued_at``,
  ``last_accessed``, and the dates inside a ``summary`` or ``warnings``) reads ``<time>``.

Nothing else is changed: every other value is what the tool answered.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.types import Tool

from mita_redis_mcp.app import App
from mita_redis_mcp.config import Settings
from mita_redis_mcp.demo import (
    BLOCKED_IP,
    BLOCKED_UA,
    DEMO_CACHE_KEY,
    DEMO_JTI,
    DEMO_USER,
    demo_commands,
)
from mita_redis_mcp.server import TOOL_SPECS, build_server

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "tools.md"
COMMAND = "python docs/generate.py"

COUNTDOWNS = frozenset({"ttl_seconds", "retry_after_seconds", "reset_seconds"})
MEASURED = frozenset({"window_seconds", "lookups_per_second"})
UNIX_TIMES = frozenset({"server_time", "started_at", "latest_at"})
ELAPSED = frozenset({"age_seconds", "idle_seconds"})
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)?")


@dataclass(frozen=True)
class Example:
    """One call shown under its tool: on the demo keyspace, read-only unless ``writes``."""

    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    caption: str = ""
    writes: bool = False


EXAMPLES: tuple[Example, ...] = (
    Example("get", {"key": f"mita:blacklist:token:{DEMO_JTI}"}, "A blacklist entry."),
    Example("get", {"key": DEMO_CACHE_KEY}, "A pickled cache entry: named, never unpickled."),
    Example(
        "get",
        {"key": "session:do-not-show"},
        "A key outside the scope: refused before anything is sent to Redis.",
    ),
    Example("keys", {"pattern": "rate_limit:*"}),
    Example("info", {"section": "keyspace"}, "The demo has no real INFO: a stand-in."),
    Example(
        "set",
        {
            "key": "feature_flag_value:new_onboarding",
            "value": '{"enabled": true}',
            "ttl_seconds": 300,
        },
        "With writes on.",
        writes=True,
    ),
    Example("delete", {"keys": ["mita:blacklist:metrics"]}, "With writes on.", writes=True),
    Example("undo", {"count": 1}, "With writes on; the journal is empty here.", writes=True),
    Example(
        "delete_pattern",
        {"pattern": "rate_limit:health_test:*"},
        "With writes on: the dry run (no token) deletes nothing and returns the token.",
        writes=True,
    ),
    Example(
        "delete",
        {"keys": ["mita:blacklist:metrics"]},
        "Read-only (the default): the tool is not listed, and a call is refused.",
    ),
    Example(
        "inspect_rate_limits",
        {"identifier": BLOCKED_IP, "user_agent": BLOCKED_UA, "endpoint": "auth_login"},
        "One client's login limiter, from the IP and User-Agent of a support ticket.",
    ),
    Example("inspect_rate_limits", {}, "Every limiter."),
    Example("list_sessions", {"user": DEMO_USER}),
    Example("check_blacklist", {"jti": DEMO_JTI}),
    Example(
        "cache_hit_rate",
        {"window_seconds": 1},
        "The demo's fake server keeps no keyspace statistics: only the app's own "
        "counters are measured.",
    ),
    Example("keyspace_summary", {}, "The demo's fake server refuses MEMORY USAGE."),
    Example("slowlog", {"count": 5}, "The demo's fake server has no slow log."),
    Example("latency", {}, "The demo's fake server has no latency monitor."),
    Example("clients", {}),
)


# -- calling the tools ------------------------------------------------------------------


def settings(*, writes: bool) -> Settings:
    return Settings.load({"allow_writes": True} if writes else {}, environ={}, demo=True)


async def list_tools() -> list[Tool]:
    """What ``tools/list`` gives with writes on, so that ``set`` and ``delete`` appear."""
    app = App.from_settings(settings(writes=True))
    async with Client(build_server(app)) as client:
        return (await client.list_tools()).tools


async def call(example: Example) -> str:
    """The example's answer as the docs show it: normalised JSON, or ``refused: why``."""
    app = App.from_settings(settings(writes=example.writes))
    # A fresh keyspace per example, written just before the call (see the module's doc).
    await app.backend.load(demo_commands(now=time.time()))
    async with Client(build_server(app)) as client:
        result = await client.call_tool(example.tool, example.arguments)
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        return f"refused: {normalise(text)}"
    return json.dumps(normalise(result.structured_content), indent=2, ensure_ascii=False)


def normalise(value: Any, name: str = "") -> Any:
    """``value`` with its clock-dependent parts made stable (the rules are in the module's
    doc). ``name`` is the field that holds it."""
    if isinstance(value, dict):
        return {key: normalise(item, key) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise(item, name) for item in value]
    if name == "confirm_token" and isinstance(value, str):
        return "<token>"
    if isinstance(value, str):
        return ISO_TIME.sub("<time>", value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if name in UNIX_TIMES:
        return "<unix time>"
    if name in ELAPSED:
        return "<seconds>"
    if name in COUNTDOWNS and isinstance(value, float):
        return float(math.ceil(value))
    if name in MEASURED and isinstance(value, float):
        return float(round(value))
    return value


# -- rendering --------------------------------------------------------------------------


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def code(value: Any) -> str:
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def plain(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional property (``anyOf: [X, {type: null}]``)."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    return branches[0] if len(branches) == 1 else schema


def type_of(schema: dict[str, Any]) -> str:
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"array of {type_of(schema.get('items', {}))}"
    return kind


def bounds_of(schema: dict[str, Any]) -> str:
    parts: list[str] = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(code(v) for v in schema["enum"]))
    unit = {"string": "characters", "array": "items"}.get(str(schema.get("type")))
    low_key, high_key = (
        ("minLength", "maxLength") if unit == "characters" else ("minItems", "maxItems")
    )
    if unit is None:
        low_key, high_key = "minimum", "maximum"
    low, high = schema.get(low_key), schema.get(high_key)
    suffix = f" {unit}" if unit else ""
    if low is not None and high is not None:
        parts.append(f"{low} to {high}{suffix}")
    elif low is not None:
        parts.append(f"at least {low}{suffix.removesuffix('s') if low == 1 else suffix}")
    elif high is not None:
        parts.append(f"at most {high}{suffix}")
    if "exclusiveMinimum" in schema:
        parts.append(f"more than {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema:
        parts.append(f"less than {schema['exclusiveMaximum']}")
    if "pattern" in schema:
        parts.append(f"matches `{schema['pattern']}`")
    if schema.get("type") == "array":
        item_bounds = bounds_of(schema.get("items", {}))
        if item_bounds:
            parts.append(f"each {item_bounds}")
    return "; ".join(parts)


def inputs_table(tool: Tool) -> list[str]:
    properties: dict[str, Any] = tool.input_schema.get("properties", {})
    if not properties:
        return ["No input."]
    required = set(tool.input_schema.get("required", []))
    lines = [
        "| input | type | bounds | default | description |",
        "|---|---|---|---|---|",
    ]
    for name, schema in properties.items():
        inner = plain(schema)
        if name in required:
            default = "required"
        elif schema.get("default") is None:
            default = "none"
        else:
            default = code(schema["default"])
        lines.append(
            f"| `{name}` | {type_of(inner)} | {cell(bounds_of(inner))} | {default} "
            f"| {cell(str(schema.get('description', '')))} |"
        )
    return lines


def kind_of(tool: Tool) -> str:
    annotations = tool.annotations
    if annotations is not None and annotations.destructive_hint:
        return (
            "Writes to Redis: listed only when the server runs with `--allow-writes` "
            "(`MITA_REDIS_MCP_ALLOW_WRITES=1`)."
        )
    return "Read-only."


async def render() -> str:
    tools = await list_tools()
    registered = [spec.name for spec in TOOL_SPECS]
    listed = [tool.name for tool in tools]
    if sorted(listed) != sorted(registered):
        raise SystemExit(f"tools/list gives {listed}, TOOL_SPECS registers {registered}")
    missing = [name for name in listed if not any(e.tool == name for e in EXAMPLES)]
    if missing:
        raise SystemExit(f"no example for {', '.join(missing)}: add one to EXAMPLES")

    out = [
        "# Tools",
        "",
        f"<!-- Generated by `{COMMAND}` from the code; do not edit by hand. -->",
        "",
        "Generated from the code by [`docs/generate.py`](generate.py); "
        "`tests/test_docs.py` fails when this page drifts from it. After changing a "
        f"tool, run `{COMMAND}`.",
        "",
        "For each tool: the description the model reads, the inputs as the MCP SDK's "
        "JSON schema gives them, and example calls with their real answers. Every example "
        "ran in process on the built-in demo keyspace (`mita-redis-mcp --demo`), through "
        "an MCP client; write tools with writes on. The demo's fake Redis has no slow "
        "log, latency monitor, MEMORY or keyspace statistics: those answers say so, as "
        "they would on a managed Redis that refuses the command.",
        "",
        "Answers depend on the clock, so the examples are normalised to read the same on "
        "every run: countdowns (`ttl_seconds`, `retry_after_seconds`, `reset_seconds`) "
        "are rounded up to whole seconds (the moment the keyspace was written), measured "
        "durations (`window_seconds`) rounded to whole seconds, unix times "
        '(`server_time`, ...) read `"<unix time>"`, a connection\'s age and idle time '
        '`"<seconds>"`, and dates in text `<time>`. Everything else is the tool\'s answer.',
        "",
        "| tool | title | kind |",
        "|---|---|---|",
    ]
    for tool in tools:
        kind = "write" if "Writes" in kind_of(tool) else "read-only"
        out.append(f"| [`{tool.name}`](#{tool.name}) | {tool.title or ''} | {kind} |")
    for tool in tools:
        out += ["", f"## {tool.name}", "", f"**{tool.title or tool.name}.** {kind_of(tool)}"]
        out += ["", "Description (what the model reads):", "", "```text"]
        out += (tool.description or "").strip().splitlines()
        out += ["```", "", "Inputs:", ""]
        out += inputs_table(tool)
        for example in (e for e in EXAMPLES if e.tool == tool.name):
            out += ["", f"Example{': ' + example.caption if example.caption else ''}", ""]
            answer = await call(example)
            fence = "```text" if answer.startswith("refused: ") else "```json"
            out += [fence, f"> {example.tool} {json.dumps(example.arguments)}"]
            out += [*answer.splitlines(), "```"]
    return "\n".join(out) + "\n"


def generate() -> str:
    """The page as the code gives it now."""
    return anyio.run(render)


def check(text: str | None = None) -> list[str]:
    """The unified diff between docs/tools.md and ``text`` (generated when not given):
    empty when the page is up to date."""
    expected = generate() if text is None else text
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    return list(
        difflib.unified_diff(
            current.splitlines(),
            expected.splitlines(),
            "docs/tools.md (on disk)",
            "docs/tools.md (from the code)",
            lineterm="",
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when docs/tools.md is stale; write nothing"
    )
    args = parser.parse_args(argv)
    # The server logs each refused example call; the page shows the refusal already.
    logging.disable(logging.WARNING)
    text = generate()
    if args.check:
        diff = check(text)
        if diff:
            sys.stderr.write("\n".join(diff[:80]) + "\n")
            sys.stderr.write(f"docs/tools.md is stale: run `{COMMAND}`\n")
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {TARGET.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
