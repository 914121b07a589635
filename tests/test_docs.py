"""The docs cannot drift from the code: docs/tools.md is what docs/generate.py makes of
the tools now, and every registered tool is documented there and in the README."""

from __future__ import annotations

import re
from pathlib import Path

from docs import generate
from mita_redis_mcp.config import OPTIONS
from mita_redis_mcp.server import TOOL_SPECS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TOOLS_PAGE = ROOT / "docs" / "tools.md"
TOOL_NAMES = [spec.name for spec in TOOL_SPECS]


def readme_tool_list() -> str:
    """The README's "## Tools" section, up to its first subsection."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Tools\n")
    end = text.index("\n### ", start)
    return text[start:end]


def test_tools_page_is_what_the_code_generates() -> None:
    diff = generate.check()
    assert not diff, (
        "docs/tools.md is stale: run `python docs/generate.py` and commit the result\n"
        + "\n".join(diff[:60])
    )


def test_every_registered_tool_is_on_the_tools_page() -> None:
    page = TOOLS_PAGE.read_text(encoding="utf-8")
    headings = re.findall(r"^## (\S+)$", page, flags=re.MULTILINE)
    assert headings == TOOL_NAMES, "run `python docs/generate.py`"
    for name in TOOL_NAMES:
        assert f"\n> {name} " in page, f"docs/tools.md has no example call of {name}"


def test_every_registered_tool_is_in_the_readme_tool_list() -> None:
    section = readme_tool_list()
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    listed = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert set(TOOL_NAMES) <= listed, f"README's Tools table misses {set(TOOL_NAMES) - listed}"
    assert "docs/tools.md" in section


def test_normalise_makes_clock_readings_stable() -> None:
    answer = {
        "ttl_seconds": 959.712,
        "retry_after_seconds": 389.6697790622711,
        "window_seconds": 1.004,
        "server_time": 1795640527.403752,
        "age_seconds": 1,
        "count": 12,
        "limit": 10,
        "summary": "blacklisted (until 2026-11-25T22:31:51+00:00).",
        "entries": [{"until": "2026-11-25T22:31:51+00:00", "ttl_seconds": None}],
    }
    assert generate.normalise(answer) == {
        "ttl_seconds": 960.0,
        "retry_after_seconds": 390.0,
        "window_seconds": 1.0,
        "server_time": "<unix time>",
        "age_seconds": "<seconds>",
        "count": 12,
        "limit": 10,
        "summary": "blacklisted (until <time>).",
        "entries": [{"until": "<time>", "ttl_seconds": None}],
    }


def test_readme_configuration_table_names_every_option_with_its_range() -> None:
    text = README.read_text(encoding="utf-8")
    rows = {
        row.split("|")[1].strip(" `"): row
        for row in text.splitlines()
        if row.startswith(("| `REDIS_URL`", "| `MITA_REDIS_MCP_"))
    }
    for option in OPTIONS:
        assert option.env in rows, f"README's Configuration table misses {option.env}"
        if option.low is not None and option.high is not None:
            bounds = f"({_number(option.low)} to {_number(option.high)})"
            assert bounds in rows[option.env], f"{option.env}: README should say {bounds}"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)
