"""Rendering for people at a terminal: tables, coloured JSON, a progress bar.

Pure string building (stdlib only); ``cli`` decides where the text goes. Colour only
when the stream is a terminal and NO_COLOR (https://no-color.org) is unset.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

RESET = "\033[0m"
_KEY = "\033[34m"  # blue
_STRING = "\033[32m"  # green
_NUMBER = "\033[36m"  # cyan
_LITERAL = "\033[35m"  # magenta: true, false, null
_DIM = "\033[2m"
_BOLD = "\033[1m"

MAX_CELL = 48


def wants_colour(stream: TextIO) -> bool:
    """True when ``stream`` is a terminal and NO_COLOR is unset (or empty)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def _paint(text: str, code: str, colour: bool) -> str:
    return f"{code}{text}{RESET}" if colour else text


def render_json(value: Any, *, colour: bool, indent: int = 2) -> str:
    """``json.dumps(value, indent=2)``, with keys, strings, numbers and literals coloured."""
    if not colour:
        return json.dumps(value, indent=indent, ensure_ascii=False)
    return _json(value, 0, indent)


def _json(value: Any, depth: int, indent: int) -> str:
    pad, inner = " " * (depth * indent), " " * ((depth + 1) * indent)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [
            f"{inner}{_paint(json.dumps(str(k), ensure_ascii=False), _KEY, True)}: "
            f"{_json(v, depth + 1, indent)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [f"{inner}{_json(v, depth + 1, indent)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    text = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        return _paint(text, _STRING, True)
    if value is None or isinstance(value, bool):
        return _paint(text, _LITERAL, True)
    return _paint(text, _NUMBER, True)


def table_fields(answer: Mapping[str, Any]) -> list[str]:
    """The answer's fields that read best as a table: non-empty lists of objects."""
    return [
        name
        for name, value in answer.items()
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)
    ]


def render_table(rows: Sequence[Mapping[str, Any]], *, colour: bool) -> str:
    """Rows as aligned columns (in first-seen key order); nested values as compact JSON,
    long cells cut to ``MAX_CELL`` characters."""
    columns: list[str] = []
    for row in rows:
        columns += [name for name in row if name not in columns]
    # The binary-safe twin of a text column (key_base64) is empty for text keys.
    columns = [
        name
        for name in columns
        if not name.endswith("_base64") or any(row.get(name) is not None for row in rows)
    ]
    cells = [[_cell(row.get(name)) for name in columns] for row in rows]
    widths = [max(len(name), *(len(line[i]) for line in cells)) for i, name in enumerate(columns)]
    header = "  ".join(name.ljust(w) for name, w in zip(columns, widths, strict=True))
    lines = [_paint(header.rstrip(), _BOLD, colour)]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    # A rendered Redis value ({"encoding", "value", "format", ...}): its text is the cell.
    if isinstance(value, Mapping) and "encoding" in value and "value" in value:
        value = value["value"]
    if value is None:
        text = "-"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def render_answer(answer: Mapping[str, Any], *, colour: bool) -> str:
    """A tool's answer for a person: each list of objects (keys, sessions, limiters...)
    as a table under its name, every other field as coloured JSON."""
    tables = table_fields(answer)
    rest = {k: v for k, v in answer.items() if k not in tables}
    parts = [
        f"{_paint(f'{name} ({len(answer[name])})', _BOLD, colour)}\n"
        f"{render_table(answer[name], colour=colour)}"
        for name in tables
    ]
    if rest:
        parts.append(render_json(rest, colour=colour))
    return "\n\n".join(parts)


class ProgressBar:
    """A one-line bar redrawn in place on a terminal, from MCP progress notifications."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self._stream = stream
        self._label = label
        self._drawn = False

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.draw(progress, total, message)

    def draw(self, progress: float, total: float | None, message: str | None) -> None:
        width = shutil.get_terminal_size((80, 20)).columns
        if total:
            share = min(max(progress / total, 0.0), 1.0)
            size = 24
            filled = round(share * size)
            bar = f"[{'#' * filled}{'.' * (size - filled)}] {share:4.0%}"
        else:
            bar = f"[{progress:g}]"
        line = f"{self._label} {bar} {message or ''}".rstrip()[: width - 1]
        self._stream.write(f"\r\033[K{line}")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar, so the answer starts on a clean line."""
        if self._drawn:
            self._stream.write("\r\033[K")
            self._stream.flush()
            self._drawn = False


def verdict_line(status: str, name: str, detail: str, *, colour: bool) -> str:
    """``doctor``'s line: status (OK / WARN / FAIL) padded, check name, one-line detail."""
    codes = {"OK": "\033[32m", "WARN": "\033[33m", "FAIL": "\033[31m"}
    tag = _paint(status.ljust(4), codes.get(status, _DIM), colour)
    return f"{tag}  {name}: {detail}"
