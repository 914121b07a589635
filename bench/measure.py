"""Timing N sequential calls, and the statistics reported for them."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Series:
    label: str
    samples_ns: list[int]
    wall_seconds: float
    server_cpu_us: float | None = None
    """CPU of the server process per timed call (us); None where no server runs."""

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile, in milliseconds."""
        ordered = sorted(self.samples_ns)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1] / 1e6

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "calls": len(self.samples_ns),
            "p50_ms": round(self.percentile(50), 4),
            "p99_ms": round(self.percentile(99), 4),
            "mean_ms": round(statistics.fmean(self.samples_ns) / 1e6, 4),
            "max_ms": round(max(self.samples_ns) / 1e6, 4),
            "calls_per_s": round(len(self.samples_ns) / self.wall_seconds, 1),
        }
        if self.server_cpu_us is not None:
            out["server_cpu_us"] = self.server_cpu_us
        return out


async def timed(
    label: str,
    call: Callable[[], Awaitable[object]],
    calls: int,
    *,
    warmup: int,
    seconds: float | None = None,
    server_cpu: Callable[[], float] | None = None,
) -> Series:
    """Time ``calls`` sequential awaits of ``call()`` after ``warmup`` untimed ones;
    with ``seconds``, stop early once that much time has gone by. ``server_cpu`` reads
    the server process's CPU seconds: read before and after the timed calls, it gives
    the server's CPU per call (the warm-up left out)."""
    for _ in range(warmup):
        await call()
    cpu_before = server_cpu() if server_cpu is not None else 0.0
    samples: list[int] = []
    clock = time.perf_counter_ns
    started = clock()
    stop = started + int(seconds * 1e9) if seconds is not None else None
    for _ in range(calls):
        before = clock()
        await call()
        samples.append(clock() - before)
        if stop is not None and clock() > stop:
            break
    wall = (clock() - started) / 1e9
    cpu_us: float | None = None
    if server_cpu is not None:
        cpu_us = round((server_cpu() - cpu_before) / len(samples) * 1e6, 1)
    return Series(label, samples, wall, cpu_us)


def median_ms(seconds: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "min_ms": round(min(seconds) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
        "runs": len(seconds),
    }
