"""A sampling profile of the MCP server process with py-spy (optional: skipped, with a
message, when py-spy is not installed or cannot attach)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from processes import Reaper


def binary() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


@contextmanager
def recording(pid: int, output: Path, reaper: Reaper, rate: int = 1000) -> Iterator[None]:
    """Sample ``pid`` for the block's duration: only the thread holding the GIL (--gil),
    so that worker threads parked in a queue do not count as busy."""
    exe = binary()
    if exe is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    args = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    args += ["--gil", "--nonblocking", "--output", str(output)]
    spy = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    reaper.track(spy.pid)
    try:
        time.sleep(1.0)  # py-spy attaches
        if spy.poll() is not None:
            error = spy.stderr.read().decode(errors="replace") if spy.stderr else ""
            raise RuntimeError(f"py-spy could not attach: {error.strip()[-300:]}")
        yield
    finally:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(timeout=10)
        if spy.stderr:
            with contextlib.suppress(OSError):
                spy.stderr.close()


# Frames under which everything runs: left out of the ``total`` ranking.
SCAFFOLDING = (
    "<module> ",
    "_run_module_as_main ",
    "_run_code ",
    "run (anyio/",
    "Runner.run ",
    "BaseEventLoop.run_forever ",
    "BaseEventLoop.run_until_complete ",
    "BaseEventLoop._run_once ",
    "AsyncIOBackend.run ",
    "main (mita_redis_mcp/cli.py)",
    "main (mita_redis_mcp/__main__.py)",
    "Thread._bootstrap",
    "Thread.run ",
    "Handle._run ",
)


def top_entries(raw: Path, top: int = 20) -> dict[str, Any]:
    """Functions by share of samples: ``self`` (on top of the stack) and ``total``
    (anywhere in it), from py-spy's collapsed-stack output; and the share of the
    event-loop thread against anyio's worker threads (the stdio pipes' readers and
    writers)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    workers = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        samples += count
        if any(f.startswith("Thread._bootstrap") for f in frames):
            workers += count
        own[frames[-1]] += count
        for frame in set(frames):
            if not frame.startswith(SCAFFOLDING):
                total[frame] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "percent": round(100 * n / samples, 1), "samples": n}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": samples,
        "worker_threads_percent": round(100 * workers / samples, 1) if samples else 0,
        "self": share(own),
        "total": share(total),
    }


def _short(frame: str) -> str:
    """'handle (/venv/lib/python3.11/site-packages/mcp/x.py:12)' -> 'handle (mcp/x.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = "stdlib " + path.split("/", 1)[-1]
            break
    return f"{name} ({path})" if path else name
