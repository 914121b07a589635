"""The ``mita-redis-mcp`` entry point (``__main__.main``) starts with the cyclic garbage
collector off, to build the SDK's and our long-lived objects without collecting them
again and again. Whatever the command, the collector must be on again afterwards: a
server left without it would keep every reference cycle for the whole session."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from mita_redis_mcp import __main__ as entry
from mita_redis_mcp import cli, server


@pytest.fixture
def collector_restored() -> Iterator[None]:
    yield
    gc.enable()
    gc.unfreeze()  # start-up's objects back into the collected generations


def test_serve_turns_the_collector_back_on_before_serving(
    monkeypatch: pytest.MonkeyPatch, collector_restored: None
) -> None:
    seen: list[tuple[bool, int]] = []

    async def serve(self: object) -> None:
        seen.append((gc.isenabled(), gc.get_freeze_count()))

    monkeypatch.setattr(server._Server, "run_stdio_async", serve)
    monkeypatch.setattr(sys, "argv", ["mita-redis-mcp", "--demo"])
    assert entry.main() == 0
    enabled, frozen = seen[0]
    assert enabled, "the server ran with the cyclic collector off"
    assert frozen > 0, "start-up's objects were not frozen out of later collections"


@pytest.mark.parametrize(
    "argv",
    [
        ["--demo", "call", "info", "--output", "json"],  # a command that is not serve
        ["--max-items", "0"],  # a configuration error: exits 2 before anything starts
    ],
)
def test_other_commands_leave_the_collector_on(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    collector_restored: None,
    argv: list[str],
) -> None:
    monkeypatch.setattr(sys, "argv", ["mita-redis-mcp", *argv])
    entry.main()
    capsys.readouterr()
    assert gc.isenabled()


def test_a_library_caller_is_left_as_it_was(collector_restored: None) -> None:
    """``cli.started`` freezes only when ``__main__`` turned the collector off: code
    that calls ``cli.main`` itself (the tests, an embedding) keeps its collector as is."""
    before = gc.get_freeze_count()
    cli.started()
    assert gc.isenabled()
    assert gc.get_freeze_count() == before
