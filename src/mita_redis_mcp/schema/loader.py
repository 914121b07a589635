"""Profiles from TOML: the built-ins shipped in ``profiles/`` and a user's own file.

Both go through the same parser, so a built-in is also the reference example of the
format (docs/profiles.md). Every mistake in a file is reported, one line each, naming
the file, the profile, the namespace and the setting: a user fixes a file in one pass.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from mita_redis_mcp.errors import ConfigError
from mita_redis_mcp.schema.model import Profile

_BUILTIN_DIR = "profiles"
_SHARED_LIMIT_KEYS = ("endpoint_field", "limits", "by_prefix", "default")


class ProfileError(ConfigError):
    """A profile file or a profile selection is invalid. One line per mistake."""


def builtin_names() -> list[str]:
    """The names of the profiles shipped with the package."""
    return sorted(_builtins())


def load_profiles(names: Sequence[str], path: Path | None = None) -> list[Profile]:
    """The profiles called ``names``, from the built-ins and the TOML file at ``path``.

    With no names, every profile of the file is selected (a user who writes a file
    means to use it). A profile in the file may not reuse a built-in name: which one
    was meant would be a guess. Raises ``ProfileError`` listing every mistake.
    """
    builtins = _builtins()
    problems: list[str] = []
    user: dict[str, Profile] = {}
    declared: list[str] = []
    if path is not None:
        user, declared, file_problems = _load_file(path)
        problems.extend(file_problems)
        for name in declared:
            if name in builtins:
                problems.append(
                    f"{path}: profile {name!r}: a built-in profile has this name; "
                    "choose another name for your own"
                )
    selected = list(names) if names else list(declared)
    known = sorted({*builtins, *declared})
    for name in sorted({n for n in selected if selected.count(n) > 1}):
        problems.append(f"profile {name!r} is selected more than once")
    for name in selected:
        if name not in builtins and name not in declared:
            problems.append(f"unknown profile {name!r}; known profiles: {', '.join(known)}")
    if problems:
        raise ProfileError(problems)
    chosen: list[Profile] = []
    for name in dict.fromkeys(selected):
        chosen.append(user[name] if name in user else builtins[name])
    return chosen


@functools.cache
def _builtins() -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    problems: list[str] = []
    folder = resources.files("mita_redis_mcp.schema").joinpath(_BUILTIN_DIR)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        found, _, file_problems = parse_profiles(entry.read_text("utf-8"), entry.name)
        problems.extend(file_problems)
        for name, profile in found.items():
            if name in profiles:
                problems.append(f"{entry.name}: built-in profile {name!r} is defined twice")
            profiles[name] = profile
    if problems:
        raise ProfileError(problems)
    return profiles


def _load_file(path: Path) -> tuple[dict[str, Profile], list[str], list[str]]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return {}, [], [f"{path}: cannot read the profile file: {reason}"]
    return parse_profiles(text, str(path))


def parse_profiles(text: str, origin: str) -> tuple[dict[str, Profile], list[str], list[str]]:
    """Parse one profile file: (valid profiles by name, every profile name declared,
    problems). ``origin`` names the file in messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return {}, [], [f"{origin}: not valid TOML: {exc}"]
    problems = [
        f"{origin}: unknown top-level key {key!r}; a profile file holds [profiles.<name>] tables"
        for key in document
        if key != "profiles"
    ]
    tables = document.get("profiles", {})
    if not isinstance(tables, dict) or not tables:
        problems.append(f"{origin}: no [profiles.<name>] table")
        return {}, [], problems
    profiles: dict[str, Profile] = {}
    for name, raw in tables.items():
        where = f"{origin}: profile {name!r}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a table ([profiles.{name}])")
            continue
        profile, profile_problems = _parse_profile(name, raw, where)
        problems.extend(profile_problems)
        if profile is not None:
            profiles[name] = profile
    return profiles, list(tables), problems


def _parse_profile(name: str, raw: dict[str, Any], where: str) -> tuple[Profile | None, list[str]]:
    problems: list[str] = []
    if "name" in raw:
        problems.append(f"{where}, name: the name is the table's key; remove this setting")
    tables = raw.get("namespaces", {})
    if not isinstance(tables, dict) or not tables:
        problems.append(
            f"{where}: no namespaces; describe each in a [profiles.{name}.namespaces.<name>] table"
        )
        tables = {}
    ns_names = list(tables)
    namespaces: list[Any] = []
    for ns_name, ns_raw in tables.items():
        if isinstance(ns_raw, dict):
            if "name" in ns_raw:
                problems.append(
                    f"{where}, namespace {ns_name!r}, name: the name is the table's key; "
                    "remove this setting"
                )
            ns_raw = {**ns_raw, "name": ns_name}
        namespaces.append(ns_raw)
    problems.extend(_resolve_limits_from(namespaces, ns_names, where))
    data = {**raw, "name": name, "namespaces": namespaces}
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            # An empty or unusable namespaces table is reported above, in words.
            if error["loc"] != ("namespaces",):
                problems.extend(_describe(error, ns_names, where))
        return None, problems
    return (None, problems) if problems else (profile, [])


def _resolve_limits_from(namespaces: list[Any], names: list[str], where: str) -> list[str]:
    """``limits_from = "other"`` in a [rate_limit] table copies the other namespace's
    limit tables (MITA's :user: keys share the :client: table, doubled): one table in
    the file, never two copies that drift apart."""
    by_name = {n: ns for n, ns in zip(names, namespaces, strict=True) if isinstance(ns, dict)}
    problems: list[str] = []
    for ns_name, ns in by_name.items():
        table = ns.get("rate_limit")
        if not isinstance(table, dict) or "limits_from" not in table:
            continue
        table = dict(table)
        ns["rate_limit"] = table
        source_name = table.pop("limits_from")
        here = f"{where}, namespace {ns_name!r}, rate_limit.limits_from"
        source = by_name.get(source_name) if isinstance(source_name, str) else None
        source_table = source.get("rate_limit") if source is not None else None
        if not isinstance(source_table, dict):
            problems.append(f"{here}: the profile has no rate-limit namespace {source_name!r}")
            continue
        if "limits_from" in source_table:
            problems.append(
                f"{here}: {source_name!r} takes its limits from elsewhere too; name the "
                "namespace that holds the table"
            )
            continue
        own = [key for key in _SHARED_LIMIT_KEYS[1:] if key in table]
        if own:
            problems.append(f"{here}: excludes a table of its own ({', '.join(own)})")
            continue
        for key in _SHARED_LIMIT_KEYS:
            if key in source_table and key not in table:
                table[key] = source_table[key]
    return problems


def _describe(error: ErrorDetails, ns_names: Sequence[str], where: str) -> list[str]:
    """One line per mistake in ``error`` (a model-level check may report several, each
    starting with the setting it is about)."""
    loc = list(error["loc"])
    place = where
    if len(loc) >= 2 and loc[0] == "namespaces" and isinstance(loc[1], int):
        index = loc[1]
        label = ns_names[index] if index < len(ns_names) else f"#{index + 1}"
        place += f", namespace {label!r}"
        loc = loc[2:]
    if loc:
        place += ", " + ".".join(str(part) for part in loc)
    lines = _message(error).split("\n")
    if not loc and error["type"] == "value_error":
        return [f"{place}, {line}" for line in lines]
    return [f"{place}: {line}" for line in lines]


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown setting (see docs/profiles.md for the format)"
    if kind == "missing":
        return "required setting is missing"
    if kind == "literal_error":
        return f"{error['input']!r} is not allowed; expected {ctx.get('expected', '?')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "string_pattern_mismatch":
        return f"{error['input']!r} must be lowercase letters, digits and '_' (or '-')"
    return str(error["msg"])
