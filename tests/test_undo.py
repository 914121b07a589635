"""The undo journal and the `undo` tool, against a real redis-server: every write's prior
state is journaled (mode 0600, bounded), and undo restores it exactly or refuses."""

from __future__ import annotations

import json
import random
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from mita_redis_mcp.app import App
from mita_redis_mcp.errors import RedisUnavailable
from mita_redis_mcp.journal import Journal, default_path
from tests.conftest import Target, answer_of, app_for, call_tool, error_text

pytestmark = pytest.mark.anyio

Answer = dict[str, Any]
MakeApp = Callable[..., App]

SEEDERS: dict[str, Callable[[redis.Redis, str], object]] = {
    "string": lambda r, k: r.set(k, b"\x00binary\xff value"),
    "hash": lambda r, k: r.hset(k, mapping={"f1": "v1", "f2": b"\xfe"}),
    "list": lambda r, k: r.rpush(k, "a", "b", "a"),
    "set": lambda r, k: r.sadd(k, "m1", "m2", "m3"),
    "zset": lambda r, k: r.zadd(k, {"low": 1.5, "high": 99}),
    "stream": lambda r, k: r.xadd(k, {"field": "value"}),
}


@pytest.fixture
def journal_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.jsonl"


@pytest.fixture
async def make(real_target: Target, journal_file: Path) -> AsyncIterator[MakeApp]:
    """Apps on the real redis-server, writes on, journaling into ``journal_file``."""
    made: list[App] = []

    def build(**options: Any) -> App:
        options.setdefault("allow_writes", True)
        options.setdefault("journal", journal_file)
        app = app_for(real_target, **options)
        made.append(app)
        return app

    yield build
    for app in made:
        await app.backend.close()


async def run(app: App, tool: str, **arguments: Any) -> Answer:
    return answer_of(await call_tool(app, tool, arguments))


def state(raw: redis.Redis, key: str | bytes) -> tuple[bytes, object]:
    """A key's type and whole value (a set's DUMP depends on its hash table's order)."""
    kind: Any = raw.type(key)
    readers: dict[bytes, Callable[[], object]] = {
        b"string": lambda: raw.get(key),
        b"hash": lambda: raw.hgetall(key),
        b"list": lambda: raw.lrange(key, 0, -1),
        b"set": lambda: raw.smembers(key),
        b"zset": lambda: raw.zrange(key, 0, -1, withscores=True),
        b"stream": lambda: raw.xrange(key),
    }
    return kind, readers[kind]() if kind in readers else None


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def create(path: Path, file_mode: int) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text("")
    path.chmod(file_mode)


def append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


# -- every type, exactly -------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SEEDERS))
async def test_undo_restores_a_deleted_key_of_every_type_exactly(
    make: MakeApp, real_target: Target, kind: str
) -> None:
    raw = real_target.raw
    key = f"app:{kind}"
    SEEDERS[kind](raw, key)
    raw.pexpire(key, 500_000)
    before = state(raw, key)
    app = make()
    assert (await run(app, "delete", keys=[key, "app:absent"]))["deleted"] == 1
    assert raw.exists(key) == 0

    answer = await run(app, "undo")
    assert [(c["tool"], c["keys"], c["restored"], c["unchanged"]) for c in answer["undone"]] == [
        ("delete", 2, 1, 1)
    ]
    assert answer["refused"] is None
    assert state(raw, key) == before
    assert 490_000 < raw.pttl(key) <= 500_000
    assert raw.exists("app:absent") == 0


@pytest.mark.parametrize("kind", list(SEEDERS))
async def test_undo_restores_every_type_after_a_pattern_delete(
    make: MakeApp, real_target: Target, kind: str
) -> None:
    raw = real_target.raw
    SEEDERS[kind](raw, f"app:t:{kind}")
    before = state(raw, f"app:t:{kind}")
    app = make()
    dry = await run(app, "delete_pattern", pattern="app:t:*")
    done = await run(app, "delete_pattern", pattern="app:t:*", confirm_token=dry["confirm_token"])
    assert done["deleted"] == 1
    await run(app, "undo")
    assert state(raw, f"app:t:{kind}") == before
    assert raw.pttl(f"app:t:{kind}") == -1


async def test_undo_of_set_restores_value_and_ttl(make: MakeApp, real_target: Target) -> None:
    raw = real_target.raw
    raw.set("app:k", "old", px=300_000)
    app = make()
    await run(app, "set", key="app:k", value="new")
    assert raw.pttl("app:k") == -1
    await run(app, "undo")
    assert raw.get("app:k") == b"old"
    assert 290_000 < raw.pttl("app:k") <= 300_000


async def test_undo_of_set_on_an_absent_key_deletes_it(make: MakeApp, real_target: Target) -> None:
    app = make()
    await run(app, "set", key="app:fresh", value="v")
    answer = await run(app, "undo")
    assert answer["undone"][0]["removed"] == 1
    assert real_target.raw.exists("app:fresh") == 0


async def test_undo_count_goes_back_newest_first(make: MakeApp, real_target: Target) -> None:
    raw = real_target.raw
    raw.set("app:k", "v0")
    app = make()
    for value in ("v1", "v2", "v3"):
        await run(app, "set", key="app:k", value=value)
    answer = await run(app, "undo", count=2)
    assert [c["tool"] for c in answer["undone"]] == ["set", "set"]
    assert raw.get("app:k") == b"v1"
    assert answer["remaining"] == 1
    # What was undone is not undone twice: the next undo takes the change before.
    await run(app, "undo")
    assert raw.get("app:k") == b"v0"
    assert (await run(app, "undo"))["undone"] == []


async def test_a_set_that_wrote_nothing_is_not_a_change(make: MakeApp, real_target: Target) -> None:
    raw = real_target.raw
    raw.set("app:k", "v0")
    app = make()
    await run(app, "set", key="app:k", value="v1")
    refused = await run(app, "set", key="app:k", value="v2", only_if_absent=True)
    assert refused["written"] is False
    answer = await run(app, "undo")
    assert len(answer["undone"]) == 1
    assert raw.get("app:k") == b"v0"


# -- refusals ------------------------------------------------------------------------


async def test_undo_refuses_a_key_written_since(make: MakeApp, real_target: Target) -> None:
    raw = real_target.raw
    raw.set("app:k", "mine")
    app = make()
    await run(app, "set", key="app:k", value="by the assistant")
    raw.set("app:k", "someone else's later write")
    answer = await run(app, "undo")
    assert answer["undone"] == []
    refused = answer["refused"]
    assert refused["key"] == "app:k"
    assert "written again" in refused["reason"]
    assert raw.get("app:k") == b"someone else's later write"
    assert answer["remaining"] == 1


async def test_undo_refuses_a_deleted_key_recreated_since(
    make: MakeApp, real_target: Target
) -> None:
    raw = real_target.raw
    raw.hset("app:h", "f", "v")
    raw.set("app:s", "s")
    app = make()
    await run(app, "delete", keys=["app:h", "app:s"])
    raw.set("app:h", "recreated by the app")
    answer = await run(app, "undo")
    assert answer["refused"]["key"] == "app:h"
    # Nothing of the refused change is restored, not even the untouched key.
    assert raw.exists("app:s") == 0
    assert raw.get("app:h") == b"recreated by the app"


async def test_undo_stops_at_the_first_refusal(make: MakeApp, real_target: Target) -> None:
    raw = real_target.raw
    raw.set("app:a", "a0")
    raw.set("app:b", "b0")
    app = make()
    await run(app, "set", key="app:a", value="a1")
    await run(app, "set", key="app:b", value="b1")
    await run(app, "set", key="app:a", value="a2")
    raw.set("app:b", "changed")
    answer = await run(app, "undo", count=3)
    assert [c["tool"] for c in answer["undone"]] == ["set"]
    assert answer["refused"]["key"] == "app:b"
    assert raw.get("app:a") == b"a1"
    assert raw.get("app:b") == b"changed"


def write_after_read(
    monkeypatch: pytest.MonkeyPatch, app: App, read: int | None, write: Callable[[], object]
) -> None:
    """``write`` (another client's write, or a failure) right after the ``read``-th read
    of the keys (DUMP states), or after every read with ``None``. For undo, 1 is its
    check, 2 the same check again once the keys are WATCHed; for set, 1 is its journal
    record under WATCH."""
    reads = 0
    real = app.backend.dump_states

    async def dump_states(keys: Sequence[bytes]) -> list[tuple[str, int, bytes | None]]:
        nonlocal reads
        states = await real(keys)
        reads += 1
        if read is None or reads == read:
            write()
        return states

    monkeypatch.setattr(app.backend, "dump_states", dump_states)


async def test_set_race_a_write_after_its_journal_is_journaled_again_not_lost(
    make: MakeApp, real_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client writes the key after set journaled it and before its SET: the
    transaction aborts, set journals the key again and writes; undo then puts back what
    that client wrote (the state SET replaced), not the state before it."""
    raw = real_target.raw
    raw.set("app:k", "original")
    app = make()
    write_after_read(monkeypatch, app, 1, lambda: raw.set("app:k", "concurrent"))

    answer = await run(app, "set", key="app:k", value="by the assistant")
    assert answer["written"] is True
    assert raw.get("app:k") == b"by the assistant"

    monkeypatch.undo()
    undone = await run(app, "undo")
    assert [c["tool"] for c in undone["undone"]] == ["set"]
    assert raw.get("app:k") == b"concurrent"


async def test_set_race_a_type_change_after_its_check_is_caught_before_any_write(
    make: MakeApp, real_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """set checks the key's type under WATCH: a hash put there after the check aborts
    the transaction, and the second try refuses to replace it."""
    raw = real_target.raw
    raw.set("app:k", "a string")
    app = make()

    def to_hash() -> None:
        raw.delete("app:k")
        raw.hset("app:k", "field", "value")

    write_after_read(monkeypatch, app, 1, to_hash)
    message = error_text(await call_tool(app, "set", {"key": "app:k", "value": "x"}))
    assert "holds a hash" in message
    assert raw.hgetall("app:k") == {b"field": b"value"}
    monkeypatch.undo()
    assert (await run(app, "undo"))["undone"] == []  # nothing was written: nothing to undo


async def test_set_race_a_key_written_at_every_try_is_not_written(
    make: MakeApp, real_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = real_target.raw
    raw.set("app:k", "original")
    app = make()
    writes = 0

    def concurrent() -> None:
        nonlocal writes
        writes += 1
        raw.set("app:k", f"concurrent {writes}")

    write_after_read(monkeypatch, app, None, concurrent)
    message = error_text(await call_tool(app, "set", {"key": "app:k", "value": "x"}))
    assert "nothing was written" in message
    assert writes == 3
    assert raw.get("app:k") == b"concurrent 3"
    monkeypatch.undo()
    assert (await run(app, "undo"))["undone"] == []


async def test_undo_race_a_write_between_its_check_and_its_restore_is_never_overwritten(
    make: MakeApp, real_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write lands after undo's last read, inside its WATCH: EXEC aborts, and undo
    refuses the change instead of overwriting that write."""
    raw = real_target.raw
    raw.set("app:k", "mine")
    raw.set("app:other", "o0")
    app = make()
    await run(app, "delete", keys=["app:k", "app:other"])
    write_after_read(monkeypatch, app, 2, lambda: raw.set("app:k", "concurrent"))

    answer = await run(app, "undo")
    assert answer["undone"] == []
    refused = answer["refused"]
    assert refused["key"] == "app:k"
    assert "changed since undo checked it" in refused["reason"]
    assert "nothing of this change was restored" in refused["reason"]
    assert raw.get("app:k") == b"concurrent"
    # One transaction: the other key of the change was not restored either.
    assert raw.exists("app:other") == 0
    assert answer["remaining"] == 1

    monkeypatch.undo()
    again = await run(app, "undo")
    assert again["refused"]["key"] == "app:k"
    assert "written again" in again["refused"]["reason"]
    assert raw.get("app:k") == b"concurrent"


async def test_undo_race_a_write_before_the_watch_is_caught_by_the_second_check(
    make: MakeApp, real_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = real_target.raw
    raw.set("app:k", "mine")
    app = make()
    await run(app, "set", key="app:k", value="by the assistant")
    write_after_read(monkeypatch, app, 1, lambda: raw.set("app:k", "concurrent"))

    answer = await run(app, "undo")
    assert answer["undone"] == []
    assert answer["refused"]["key"] == "app:k"
    assert "written again" in answer["refused"]["reason"]
    assert raw.get("app:k") == b"concurrent"


async def test_undo_race_a_key_put_back_concurrently_is_left_alone(
    make: MakeApp, real_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that puts a key back in its prior state before the WATCH: the second
    check sees nothing left to restore for it, and the change is undone."""
    raw = real_target.raw
    raw.set("app:k", "mine")
    app = make()
    await run(app, "set", key="app:k", value="by the assistant")
    write_after_read(monkeypatch, app, 1, lambda: raw.set("app:k", "mine"))

    answer = await run(app, "undo")
    assert answer["refused"] is None
    assert [c["tool"] for c in answer["undone"]] == ["set"]
    assert raw.get("app:k") == b"mine"


async def test_undo_race_a_check_failing_under_watch_restores_nothing_and_sends_no_unwatch(
    make: MakeApp, real_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WATCH ends with an (empty) EXEC, never UNWATCH, which the least-privilege
    ACL line does not grant."""
    raw = real_target.raw
    raw.set("app:k", "mine")
    app = make()
    await run(app, "set", key="app:k", value="by the assistant")
    raw.config_resetstat()

    def fail() -> None:
        raise RedisUnavailable("cannot reach Redis: connection lost")

    write_after_read(monkeypatch, app, 2, fail)
    message = error_text(await call_tool(app, "undo", {}))
    assert "cannot reach Redis" in message
    assert raw.get("app:k") == b"by the assistant"
    assert "cmdstat_unwatch" not in raw.info("commandstats")

    monkeypatch.undo()
    answer = await run(app, "undo")
    assert [c["tool"] for c in answer["undone"]] == ["set"]
    assert raw.get("app:k") == b"mine"


async def test_undo_refuses_a_journal_naming_a_key_outside_the_scope(
    make: MakeApp, real_target: Target
) -> None:
    """The same journal, used by a server with a narrower scope: undo must not read or
    restore a key this scope forbids, nor name it."""
    raw = real_target.raw
    raw.set("other:k", "before")
    wide = make(prefixes=("app:", "other:"))
    await run(wide, "set", key="other:k", value="after")
    message = error_text(await call_tool(make(), "undo", {}))
    assert "outside the allowed prefixes" in message
    assert "other:k" not in message
    assert raw.get("other:k") == b"after"


async def test_a_key_too_big_to_journal_is_not_written(
    make: MakeApp, real_target: Target, journal_file: Path
) -> None:
    raw = real_target.raw
    # Incompressible: DUMP compresses with LZF.
    raw.set("app:big", random.Random(5).randbytes(600_000))
    app = make(journal_max_bytes=1024 * 1024)
    message = error_text(await call_tool(app, "delete", {"keys": ["app:big"]}))
    assert "too big to journal" in message
    assert "nothing was written" in message
    assert raw.strlen("app:big") == 600_000
    message = error_text(await call_tool(app, "set", {"key": "app:big", "value": "small"}))
    assert "too big to journal" in message
    assert raw.strlen("app:big") == 600_000


async def test_undo_is_hidden_and_refused_when_writes_are_off(
    make: MakeApp, real_target: Target
) -> None:
    message = error_text(await call_tool(make(allow_writes=False), "undo", {}))
    assert "--allow-writes" in message


# -- the journal file ----------------------------------------------------------------


async def test_journal_file_is_private_and_binary_safe(
    make: MakeApp, real_target: Target, journal_file: Path
) -> None:
    key = b"app:\xff\x00bin"
    real_target.raw.set(key, b"\x00\xfe")
    app = make()
    await call_tool(app, "delete", {"keys": ["YXBwOv8AYmlu"], "key_encoding": "base64"})
    assert mode(journal_file) == 0o600
    assert mode(journal_file.parent) == 0o700
    lines = [json.loads(line) for line in read_lines(journal_file)]
    assert [line["kind"] for line in lines] == ["before", "done"]
    assert lines[0]["key"] == "YXBwOv8AYmlu"
    assert lines[0]["type"] == "string"
    await run(app, "undo")
    assert real_target.raw.get(key) == b"\x00\xfe"


async def test_journal_tightens_a_loose_file_and_refuses_a_symlink(
    make: MakeApp, real_target: Target, journal_file: Path, tmp_path: Path
) -> None:
    create(journal_file, 0o644)
    await run(make(), "set", key="app:k", value="v")
    assert mode(journal_file) == 0o600

    target = tmp_path / "elsewhere"
    create(target, 0o600)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    message = error_text(await call_tool(make(journal=link), "set", {"key": "app:k", "value": "w"}))
    assert "cannot write the undo journal" in message
    assert real_target.raw.get("app:k") == b"v"
    assert read_lines(target) == []


async def test_journal_stays_within_its_bound(
    make: MakeApp, real_target: Target, journal_file: Path
) -> None:
    real_target.raw.set("app:k", b"y" * 100_000)
    app = make(journal_max_bytes=1024 * 1024)
    for i in range(30):
        await run(app, "set", key="app:k", value="z" * 100_000 + str(i))
        assert sum(len(line) + 1 for line in read_lines(journal_file)) <= 1024 * 1024
    # The newest changes are kept, whole: undo still goes back several steps.
    answer = await run(app, "undo", count=3)
    assert len(answer["undone"]) == 3
    assert real_target.raw.get("app:k") == b"z" * 100_000 + b"26"


def test_default_location_follows_xdg_state_home() -> None:
    assert default_path({"XDG_STATE_HOME": "/srv/state"}) == Path(
        "/srv/state/mita-redis-mcp/journal.jsonl"
    )
    assert default_path({"XDG_STATE_HOME": "relative"}) == (
        Path.home() / ".local/state/mita-redis-mcp/journal.jsonl"
    )
    assert Journal(None, 1 << 20).describe() == "in memory (demo)"


async def test_a_torn_last_line_does_not_lose_the_journal(
    make: MakeApp, real_target: Target, journal_file: Path
) -> None:
    real_target.raw.set("app:k", "v0")
    app = make()
    await run(app, "set", key="app:k", value="v1")
    append(journal_file, '{"kind": "before", "change": "torn", "ti')
    await run(app, "undo")
    assert real_target.raw.get("app:k") == b"v0"
