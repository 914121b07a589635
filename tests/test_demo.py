"""``mita-redis-mcp demo``: the tour prints what the tools answer on the built-in demo
keyspace; and that keyspace follows MITA's real layout (../shared/keyspaces/mita.md)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mita_redis_mcp import cli
from mita_redis_mcp.backend import Command
from mita_redis_mcp.config import OPTIONS
from mita_redis_mcp.demo import (
    BLOCKED_IP,
    BLOCKED_UA,
    DEMO_JTI,
    DEMO_USER,
    client_hash,
    demo_commands,
)
from mita_redis_mcp.schema import load_profiles, scope_prefixes
from mita_redis_mcp.scope import Scope
from mita_redis_mcp.values import sniff
from tests.conftest import READ_TOOLS
from tests.servers import free_port

NOW = 1_800_000_000.25


# MITA's sliding-log limits (app/core/simple_rate_limiter.py): endpoint -> (L, W seconds).
SLIDING_LOG_LIMITS = {"auth_login": (10, 900), "api_general": (1000, 3600)}
OUTSIDE_KEYS = {"session:do-not-show", "celery-task-meta-1"}
SECRET_VALUE = "someone else's secret"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


# -- the tour ---------------------------------------------------------------------------


@dataclass
class Step:
    question: str
    tool: str
    arguments: dict[str, Any]
    answer: dict[str, Any] | None
    refusal: str | None


def parse_tour(out: str) -> tuple[list[str], list[Step]]:
    """The tour's heading lines, and each step: '# question', '> tool {args}', then
    the answer's JSON or 'refused: why'."""
    heading, *blocks = out.split("\n\n# ")
    steps = []
    for block in blocks:
        question, command, body = block.split("\n", 2)
        assert command.startswith("> "), block
        tool, arguments = command[2:].split(" ", 1)
        if body.startswith("refused: "):
            steps.append(Step(question, tool, json.loads(arguments), None, body[9:].strip()))
        else:
            steps.append(Step(question, tool, json.loads(arguments), json.loads(body), None))
    return heading.split("\n"), steps


def check_tour(out: str) -> None:
    heading, steps = parse_tour(out)
    assert heading[0].endswith("demo keyspace (no Redis needed)")
    assert heading[1].startswith("scope: ")
    assert heading[2] == "tools: " + ", ".join(READ_TOOLS)
    assert [step.tool for step in steps] == [
        "info",
        "keys",
        "inspect_rate_limits",
        "check_blacklist",
        "list_sessions",
        "get",
        "get",
        "delete",
    ]

    answered = [step for step in steps if step.answer is not None]
    assert len(answered) == 6
    for step in answered:
        assert step.answer is not None
        assert step.answer["demo"] is True, step.question

    limits = steps[2].answer
    assert limits is not None
    [limiter] = limits["limiters"]
    assert limiter["key"] == f"rate_limit:auth_login:client:{client_hash(BLOCKED_IP, BLOCKED_UA)}"
    assert limiter["algorithm"] == "sliding_log_zset"
    assert (limiter["limit"], limiter["window_seconds"]) == SLIDING_LOG_LIMITS["auth_login"]
    assert limiter["count"] == 12
    assert limiter["blocked"] is True
    assert limiter["retry_after_seconds"] > 0

    revoked = steps[3].answer
    assert revoked is not None
    assert revoked["blacklisted"] is True
    assert revoked["entries"][0]["reason"] == "user_revocation"

    sessions = steps[4].answer
    assert sessions is not None
    assert sessions["sessions"] == []
    assert "no sessions" in sessions["summary"]

    cached = steps[5].answer
    assert cached is not None
    assert cached["value"]["format"] == "pickle"
    assert cached["value"]["encoding"] == "base64"

    outside, delete = steps[6], steps[7]
    assert outside.arguments == {"key": "session:do-not-show"}
    assert outside.refusal is not None
    assert "outside the allowed prefixes" in outside.refusal
    assert delete.refusal is not None
    assert "writes are disabled" in delete.refusal
    assert "--allow-writes" in delete.refusal
    assert SECRET_VALUE not in out


def test_demo_tour_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo"]) == 0
    captured = capsys.readouterr()
    check_tour(captured.out)
    assert "Traceback" not in captured.err


def test_demo_tour_as_a_process_needs_no_redis() -> None:
    script = Path(sys.executable).parent / "mita-redis-mcp"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/"),
        # Nothing listens here: the tour must not try.
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    result = subprocess.run(
        [str(script), "demo"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    check_tour(result.stdout)
    assert "Traceback" not in result.stderr
    # The tour talks to a person: the server's INFO lines (each refusal logged twice)
    # would bury its answers in a terminal.
    assert " INFO " not in result.stderr, result.stderr[:500]


# -- the keyspace follows MITA's layout ---------------------------------------------------


def by_key(commands: list[Command]) -> dict[str, list[Command]]:
    keys: dict[str, list[Command]] = defaultdict(list)
    for command in commands:
        key = command[1]
        keys[key.decode() if isinstance(key, bytes) else str(key)].append(command)
    return keys


@pytest.fixture
def keyspace() -> dict[str, list[Command]]:
    return by_key(demo_commands(NOW))


def test_client_hash_is_mitas_limiter_id() -> None:
    ua8 = hashlib.sha256(BLOCKED_UA.encode()).hexdigest()[:8]
    expected = hashlib.sha256(f"{BLOCKED_IP}:{ua8}".encode()).hexdigest()[:16]
    assert client_hash(BLOCKED_IP, BLOCKED_UA) == expected == "de4ab5b3385f31a6"
    assert client_hash("198.51.100.23", "MITA/2.4.1 (Android 15)") == "7d439fa6c01c9b9b"


def test_sliding_logs_hold_float_timestamps_within_their_window(
    keyspace: dict[str, list[Command]],
) -> None:
    logs = {
        key: commands
        for key, commands in keyspace.items()
        if key.startswith("rate_limit:") and ":client:" in key
    }
    assert set(logs) == {
        f"rate_limit:auth_login:client:{client_hash(BLOCKED_IP, BLOCKED_UA)}",
        f"rate_limit:api_general:client:{client_hash('198.51.100.23', 'MITA/2.4.1 (Android 15)')}",
    }
    for key, commands in logs.items():
        endpoint = key.split(":")[1]
        limit, window = SLIDING_LOG_LIMITS[endpoint]
        adds = [c for c in commands if c[0] == "ZADD"]
        assert [c for c in commands if c[0] != "ZADD"] == [("EXPIRE", key, window + 60)]
        for _, _, score, member in adds:
            # MITA's limiter: member = score = str(time.time()).
            assert isinstance(score, float)
            assert member == str(score)
            assert NOW - window <= score <= NOW
        if endpoint == "auth_login":
            assert len(adds) > limit, "the tour's blocked client must be over its limit"
        else:
            assert len(adds) <= limit


def test_health_probe_log(keyspace: dict[str, list[Command]]) -> None:
    [(command, _, score, member)] = keyspace["rate_limit:health_test:ip:127.0.0.1"]
    assert command == "ZADD"
    assert isinstance(score, float)
    assert member == str(score)


def test_blacklist_entries_are_uuid4_jtis_with_bounded_ttls(
    keyspace: dict[str, list[Command]],
) -> None:
    entries = {
        key: commands
        for key, commands in keyspace.items()
        if key.startswith(("mita:blacklist:token:", "revoked:jwt:"))
    }
    assert f"mita:blacklist:token:{DEMO_JTI}" in entries
    assert any(key.startswith("revoked:jwt:") for key in entries)
    for key, commands in entries.items():
        jti = key.rsplit(":", 1)[1]
        assert uuid.UUID(jti).version == 4
        [(verb, _, value, ex, ttl)] = commands
        assert (verb, ex) == ("SET", "EX")
        assert isinstance(ttl, int)
        assert 0 < ttl <= 7 * 86_400
        assert isinstance(value, str)
        if key.startswith("revoked:jwt:"):
            assert value == "blacklisted"
        else:
            assert value in ("blacklisted", "user_revocation") or value.startswith(
                "admin_revocation:"
            )


def test_user_token_index_and_metrics(keyspace: dict[str, list[Command]]) -> None:
    tokens = keyspace[f"mita:user:tokens:{DEMO_USER}"]
    assert tokens[0] == ("SADD", f"mita:user:tokens:{DEMO_USER}", DEMO_JTI)
    assert tokens[1][0] == "EXPIRE"

    [metrics] = keyspace["mita:blacklist:metrics"]
    assert metrics[0] == "HSET"
    assert set(metrics[2::2]) == {
        "total_blacklisted",
        "access_tokens_blacklisted",
        "refresh_tokens_blacklisted",
    }


def test_cache_entry_is_a_pickle_with_its_meta_counter(
    keyspace: dict[str, list[Command]],
) -> None:
    [cache_key] = [key for key in keyspace if key.startswith("cache:")]
    digest = cache_key.removeprefix("cache:")
    assert len(digest) == 32
    assert int(digest, 16) >= 0
    [(verb, _, value, ex, _ttl)] = keyspace[cache_key]
    assert (verb, ex) == ("SET", "EX")
    assert isinstance(value, bytes)
    assert sniff(value) == "pickle"
    [meta] = keyspace["meta:" + cache_key.removeprefix("cache:")]
    assert meta[0] == "HSET"
    assert set(meta[2::2]) == {"access_count", "last_accessed"}


def test_every_key_but_the_decoys_is_in_mitas_scope(keyspace: dict[str, list[Command]]) -> None:
    scope = Scope(scope_prefixes(load_profiles(["mita"])))
    inside = {key for key in keyspace if scope.contains(key.encode())}
    assert set(keyspace) - inside == OUTSIDE_KEYS
    assert SECRET_VALUE in [c[2] for c in keyspace["session:do-not-show"]]
