"""delete_pattern against a real redis-server: a dry run first, a token bound to what it
saw, bounded SCAN + UNLINK batches, every key journaled for undo, and every key outside
the pattern or the scope left alone."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mita_redis_mcp.app import App
from mita_redis_mcp.tools import cleanup
from tests.conftest import Target, answer_of, app_for, call_tool, error_text

pytestmark = pytest.mark.anyio

Answer = dict[str, Any]
MakeApp = Callable[..., App]


@pytest.fixture
async def make(real_target: Target, tmp_path: Path) -> AsyncIterator[MakeApp]:
    made: list[App] = []

    def build(**options: Any) -> App:
        options.setdefault("allow_writes", True)
        options.setdefault("journal", tmp_path / "journal.jsonl")
        app = app_for(real_target, **options)
        made.append(app)
        return app

    yield build
    for app in made:
        await app.backend.close()


async def run(app: App, **arguments: Any) -> Answer:
    return answer_of(await call_tool(app, "delete_pattern", arguments))


def journaled(journal: Path) -> int:
    """Keys the journal holds a prior state of."""
    return sum('"kind":"before"' in line for line in journal.read_text().splitlines())


def seed(target: Target, keys: list[str]) -> None:
    with target.raw.pipeline(transaction=False) as pipe:
        for start in range(0, len(keys), 10_000):
            pipe.mset(dict.fromkeys(keys[start : start + 10_000], "v"))
        pipe.execute()


SURVIVORS = [
    *[f"other:test:{i}" for i in range(2000)],  # out of scope
    *[f"app:keep:{i}" for i in range(2000)],  # in scope, not matching
    "app:test",
    "app:testing:1",
]


@pytest.mark.slow
async def test_100k_matching_keys_among_keys_that_must_survive(
    make: MakeApp, real_target: Target, tmp_path: Path
) -> None:
    doomed = [f"app:test:{i}" for i in range(100_000)]
    seed(real_target, doomed + SURVIVORS)
    app = make()
    started = time.monotonic()
    deleted = calls = 0
    while True:
        dry = await run(app, pattern="app:test:*")
        if dry["matched"] == 0:
            break
        assert dry["deleted"] == 0
        assert all(k["key"].startswith("app:test:") for k in dry["sample"])
        done = await run(app, pattern="app:test:*", confirm_token=dry["confirm_token"])
        assert done["dry_run"] is False
        assert done["deleted"] == dry["matched"] <= cleanup.MAX_PATTERN_DELETE
        deleted += done["deleted"]
        calls += 1
        if done["complete"]:
            break
        assert "call again without a token" in done["note"]
    elapsed = time.monotonic() - started
    assert deleted == 100_000
    assert calls == 10
    assert real_target.raw.exists(*doomed[:1000]) == 0
    assert real_target.raw.dbsize() == len(SURVIVORS)
    assert real_target.raw.exists(*SURVIVORS) == len(SURVIVORS)
    # About 15 s on an idle 2-core machine; the bound catches a walk gone quadratic.
    assert elapsed < 60, f"{elapsed:.1f} s"
    # Every key was journaled for undo before its UNLINK.
    assert journaled(tmp_path / "journal.jsonl") == 100_000


async def test_the_dry_run_deletes_nothing(make: MakeApp, real_target: Target) -> None:
    seed(real_target, ["app:t:1", "app:t:2", "app:u:1"])
    answer = await run(make(), pattern="app:t:*")
    assert answer["dry_run"] is True
    assert answer["matched"] == 2
    assert sorted(k["key"] for k in answer["sample"]) == ["app:t:1", "app:t:2"]
    assert answer["confirm_token"]
    assert answer["complete"] is True
    assert real_target.raw.dbsize() == 3


async def test_a_token_after_new_keys_appeared_deletes_nothing(
    make: MakeApp, real_target: Target
) -> None:
    seed(real_target, ["app:t:1", "app:t:2"])
    app = make()
    dry = await run(app, pattern="app:t:*")
    real_target.raw.set("app:t:3", "new since the dry run")
    answer = await run(app, pattern="app:t:*", confirm_token=dry["confirm_token"])
    assert answer["dry_run"] is True
    assert answer["deleted"] == 0
    assert "not those the token's dry run saw" in answer["note"]
    assert real_target.raw.dbsize() == 3
    # The new answer's token covers what is there now.
    done = await run(app, pattern="app:t:*", confirm_token=answer["confirm_token"])
    assert done["deleted"] == 3


async def test_a_token_for_another_pattern_or_max_keys_deletes_nothing(
    make: MakeApp, real_target: Target
) -> None:
    seed(real_target, ["app:t:1", "app:tmp:1"])
    app = make()
    token = (await run(app, pattern="app:t:*"))["confirm_token"]
    other = await run(app, pattern="app:t*", confirm_token=token)
    assert (other["dry_run"], other["deleted"]) == (True, 0)
    fewer = await run(app, pattern="app:t:*", confirm_token=token, max_keys=5)
    assert (fewer["dry_run"], fewer["deleted"]) == (True, 0)
    assert real_target.raw.dbsize() == 2


async def test_a_forged_token_deletes_nothing(make: MakeApp, real_target: Target) -> None:
    seed(real_target, ["app:t:1"])
    forged = f"{int(time.time()) + 100}.1.{'0' * 32}"
    answer = await run(make(), pattern="app:t:*", confirm_token=forged)
    assert answer["deleted"] == 0
    assert real_target.raw.exists("app:t:1") == 1
    message = error_text(
        await call_tool(make(), "delete_pattern", {"pattern": "app:t:*", "confirm_token": "x"})
    )
    assert "malformed" in message


async def test_an_expired_token_deletes_nothing(
    make: MakeApp, real_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(real_target, ["app:t:1"])
    app = make()
    # A token that expired ten seconds after... ten seconds before it was issued.
    monkeypatch.setattr(cleanup, "TOKEN_SECONDS", -10)
    token = (await run(app, pattern="app:t:*"))["confirm_token"]
    result = await call_tool(app, "delete_pattern", {"pattern": "app:t:*", "confirm_token": token})
    assert "expired" in error_text(result)
    assert real_target.raw.exists("app:t:1") == 1


async def test_max_keys_bounds_one_call(make: MakeApp, real_target: Target) -> None:
    seed(real_target, [f"app:t:{i}" for i in range(10)])
    app = make()
    dry = await run(app, pattern="app:t:*", max_keys=3)
    assert (dry["matched"], dry["complete"]) == (3, False)
    done = await run(app, pattern="app:t:*", max_keys=3, confirm_token=dry["confirm_token"])
    assert done["deleted"] == 3
    assert done["complete"] is False
    assert real_target.raw.dbsize() == 7


async def test_a_pattern_outside_the_scope_is_refused(make: MakeApp, real_target: Target) -> None:
    seed(real_target, ["other:t:1", "app:t:1"])
    result = await call_tool(make(), "delete_pattern", {"pattern": "other:*"})
    assert "cannot match a key in the allowed prefixes" in error_text(result)
    # A pattern spanning every prefix finds only in-scope keys.
    app = make()
    dry = await run(app, pattern="*")
    assert [k["key"] for k in dry["sample"]] == ["app:t:1"]
    await run(app, pattern="*", confirm_token=dry["confirm_token"])
    assert real_target.raw.exists("other:t:1") == 1


async def test_delete_pattern_is_refused_when_writes_are_off(
    make: MakeApp, real_target: Target
) -> None:
    seed(real_target, ["app:t:1"])
    result = await call_tool(make(allow_writes=False), "delete_pattern", {"pattern": "app:*"})
    assert "--allow-writes" in error_text(result)
    assert real_target.raw.exists("app:t:1") == 1


async def test_nothing_matching_gives_no_token(make: MakeApp) -> None:
    answer = await run(make(), pattern="app:none:*")
    assert (answer["matched"], answer["confirm_token"]) == (0, None)


async def test_a_scan_answering_foreign_keys_deletes_only_matching_keys_in_scope(
    make: MakeApp, real_target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each key is checked against the pattern and the scope on the delete path itself,
    not only trusted from SCAN MATCH: a SCAN that also answers keys outside the pattern
    or the scope (a proxy's bug, a hostile server) gets none of them deleted."""
    seed(real_target, ["app:t:1", "app:t:2", "app:keep:1", "other:t:1", "app:t"])
    app = make()
    real_scan = app.backend.scan

    async def lying_scan(
        cursor: int, match: bytes, count: int, type_: str | None = None
    ) -> tuple[int, list[bytes]]:
        next_cursor, keys = await real_scan(cursor, match, count, type_)
        return next_cursor, [*keys, b"app:keep:1", b"other:t:1", b"app:t"]

    monkeypatch.setattr(app.backend, "scan", lying_scan)
    dry = await run(app, pattern="app:t:*")
    assert sorted(k["key"] for k in dry["sample"]) == ["app:t:1", "app:t:2"]
    done = await run(app, pattern="app:t:*", confirm_token=dry["confirm_token"])
    assert done["deleted"] == 2
    assert real_target.raw.exists("app:t:1", "app:t:2") == 0
    assert real_target.raw.exists("app:keep:1", "other:t:1", "app:t") == 3
    assert journaled(tmp_path / "journal.jsonl") == 2
