"""The longest single Redis command a block of work caused, from SLOWLOG.

For the window, every command is logged (slowlog-log-slower-than 0) in a log long
enough to hold them all; afterwards the log is read back whole (SLOWLOG GET -1), the
entries of the clients of interest picked by their CLIENT SETNAME name, and the
settings restored. The benchmark names each of its own connections ``bench-...``; the
MCP server's connections are the others (the redis-server is the benchmark's own)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis


@contextmanager
def longest_command(
    client: redis.Redis, whose: Callable[[bytes], bool], max_len: int, threshold_us: int = 0
) -> Iterator[dict[str, Any]]:
    """Yield a dict filled, after the block, with the longest command of the clients
    whose name satisfies ``whose`` (``max_us``, ``command``), the command counts, and
    whether the log overflowed. With ``threshold_us`` above 0 only commands at least
    that long are logged: the maximum is still exact when it is above it, the counts
    and p99.9 are not."""
    saved = {
        name: str(client.config_get(name)[name])
        for name in ("slowlog-log-slower-than", "slowlog-max-len")
    }
    found: dict[str, Any] = {}
    client.config_set("slowlog-log-slower-than", threshold_us)
    client.config_set("slowlog-max-len", max_len)
    client.slowlog_reset()
    try:
        yield found
        logged = int(client.slowlog_len())
        # "SLOWLOG", "GET" as two words: redis-py then returns the raw reply, far
        # faster to read than its parsed dicts when there are a million entries.
        entries: Any = client.execute_command("SLOWLOG", "GET", -1)  # type: ignore[no-untyped-call]
        mine = [e for e in entries if whose(bytes(e[5]) if len(e) > 5 else b"")]
        counts = Counter(bytes(e[3][0]).decode().upper() for e in mine)
        mine.sort(key=lambda e: int(e[2]), reverse=True)
        durations = [int(e[2]) for e in mine]
        found.update(
            max_us=durations[0] if durations else 0,
            command=_show(mine[0][3]) if mine else None,
            # A one-off outlier (the 2-core machine preempting redis-server) shows as
            # a max far above the next ones; the top five and p99.9 tell them apart.
            top_us=[(d, _show(e[3])) for d, e in zip(durations[:5], mine, strict=False)],
            p999_us=durations[len(durations) // 1000] if durations else 0,
            commands=dict(counts.most_common()),
            overflowed=logged >= max_len,
        )
    finally:
        client.config_set("slowlog-log-slower-than", saved["slowlog-log-slower-than"])
        client.config_set("slowlog-max-len", saved["slowlog-max-len"])
        client.slowlog_reset()


def _show(args: list[bytes]) -> str:
    words = [bytes(a).decode(errors="replace") for a in args[:8]]
    text = " ".join(w if len(w) <= 60 else w[:57] + "..." for w in words)
    return text + (" ..." if len(args) > 8 else "")
