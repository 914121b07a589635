"""INFO, parsed into sections and fields, with what must not reach a model removed.

Pure: takes INFO's text, returns data. Redis puts no password in INFO, but it does
name other hosts (replication peers, sentinels' masters) and local paths; those are
left out unless the caller asks for addresses.
"""

from __future__ import annotations

import re

from pydantic import JsonValue

# Fields naming another machine, or this one's file system.
_ADDRESS_FIELDS = {"master_host", "executable", "config_file", "master_link_down_since_seconds"}
_ADDRESS_SUBFIELDS = {"ip", "address", "bind"}
# Replicas, sentinels' masters, and (Valkey 8+, Redis 7.2+) listener0:name=tcp,bind=...
_REPLICA_FIELD = re.compile(r"^(slave|replica)\d+$|^master\d+$|^listener\d+$")
# Defence in depth: a future or module field that smells of a credential is dropped.
_SECRET_NAME = re.compile(r"pass(word)?|secret|requirepass|masterauth|token", re.IGNORECASE)

Sections = dict[str, dict[str, JsonValue]]


def parse_info(text: str) -> Sections:
    """Parse INFO's ``# Section`` / ``field:value`` text, typing numbers and splitting
    ``k=v,k=v`` values (keyspace, replicas, command stats) into objects."""
    sections: Sections = {}
    current = sections.setdefault("server", {})
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            current = sections.setdefault(line.lstrip("# ").strip().lower(), {})
            continue
        name, sep, value = line.partition(":")
        if sep:
            current[name] = _value(value)
    return {name: fields for name, fields in sections.items() if fields}


def redact_info(sections: Sections, *, include_addresses: bool) -> tuple[Sections, list[str]]:
    """Drop secret-looking fields always, and addresses unless asked; say what went."""
    removed: list[str] = []
    clean: Sections = {}
    for section, fields in sections.items():
        kept: dict[str, JsonValue] = {}
        for name, value in fields.items():
            if _SECRET_NAME.search(name):
                removed.append(f"{section}.{name}")
                continue
            if not include_addresses:
                if name in _ADDRESS_FIELDS:
                    removed.append(f"{section}.{name}")
                    continue
                if _REPLICA_FIELD.match(name) and isinstance(value, dict):
                    hidden = [k for k in value if k in _ADDRESS_SUBFIELDS]
                    if hidden:
                        value = {k: v for k, v in value.items() if k not in _ADDRESS_SUBFIELDS}
                        removed.extend(f"{section}.{name}.{k}" for k in hidden)
            kept[name] = value
        clean[section] = kept
    return clean, removed


def _value(text: str) -> JsonValue:
    if ("=" in text and "," in text) or re.fullmatch(r"[a-z_]+=[^,]*", text):
        pairs = (item.partition("=") for item in text.split(","))
        return {k: _scalar(v) for k, _, v in pairs}
    return _scalar(text)


def _scalar(text: str) -> JsonValue:
    # Leading zeros mark an identifier (redis_git_sha1:00000000), not a number.
    if re.fullmatch(r"-?(0|[1-9]\d{0,17})", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    return text


# Fields whose total over a cluster's primaries is their sum: counters, connections,
# memory, keys (keyspace dbN keys/expires, commandstats calls/usec, errorstats count).
_ADDITIVE = re.compile(
    r"^(total_|keyspace_|expired_|evicted_|rejected_|pubsub_|instantaneous_|"
    r"(connected|blocked|tracking)_clients$|used_memory(_rss|_dataset|_peak)?$|maxmemory$|"
    r"keys$|expires$|calls$|usec$|failed_calls$|count$)"
)


def total_info(nodes: list[Sections]) -> Sections:
    """The INFO of a cluster's primaries as one: counts summed (keys, clients, memory,
    hits and misses, commands), values every primary shares kept (version, mode),
    anything else left out (it is in each node's own INFO)."""
    total: Sections = {}
    for section in dict.fromkeys(name for node in nodes for name in node):
        merged = _merge([node.get(section, {}) for node in nodes])
        if merged:
            total[section] = merged
    return total


def _merge(parts: list[dict[str, JsonValue]]) -> dict[str, JsonValue]:
    merged: dict[str, JsonValue] = {}
    for name in dict.fromkeys(field for part in parts for field in part):
        values = [part[name] for part in parts if name in part]
        nested = [v for v in values if isinstance(v, dict)]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if nested and len(nested) == len(values):
            inner = _merge(nested)
            if "calls" in inner and "usec" in inner:
                calls, usec = inner["calls"], inner["usec"]
                if isinstance(calls, int) and calls and isinstance(usec, int | float):
                    inner["usec_per_call"] = round(usec / calls, 2)
            if inner:
                merged[name] = inner
        elif _ADDITIVE.match(name) and len(numbers) == len(values):
            merged[name] = sum(numbers)
        elif len(values) == len(parts) and all(v == values[0] for v in values):
            merged[name] = values[0]
    return merged
