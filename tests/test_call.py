"""``mita-redis-mcp call``: any tool from the terminal, with the server's scope and
safety, on a real redis-server and on the demo keyspace."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from mita_redis_mcp import cli
from mita_redis_mcp.cli import UsageError, parse_arguments
from mita_redis_mcp.config import OPTIONS
from mita_redis_mcp.demo import BLOCKED_IP, BLOCKED_UA
from mita_redis_mcp.terminal import ProgressBar, render_answer, render_json, wants_colour
from tests.servers import ServerProcess

SECRET = "the value outside the scope"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture
def raw(redis_server: ServerProcess) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    client.set("app:user:1", "alice")
    client.hset("app:h", mapping={"f1": "v1", "f2": "v2"})
    client.rpush("app:list", "a", "b")
    client.set("secret:1", SECRET)
    yield client
    client.close()


def run(
    capsys: pytest.CaptureFixture[str], server: ServerProcess, *argv: str
) -> tuple[int, str, str]:
    code = cli.main(["--redis-url", server.url, "--prefix", "app:", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_keys_prints_a_table(
    capsys: pytest.CaptureFixture[str], redis_server: ServerProcess, raw: redis.Redis
) -> None:
    code, out, err = run(capsys, redis_server, "call", "keys", "--arg", "pattern=app:*")
    assert code == 0, err
    header, *rows = out.split("\n\n")[0].splitlines()[1:]
    assert header.split() == ["key", "type", "ttl_seconds"]
    assert sorted(row.split()[:2] for row in rows) == [
        ["app:h", "hash"],
        ["app:list", "list"],
        ["app:user:1", "string"],
    ]
    assert out.startswith("keys (3)")
    assert "secret:1" not in out
    assert "\033[" not in out, "no colour outside a terminal"


def test_arg_values_are_json_when_they_parse() -> None:
    assert parse_arguments(
        ["n=5", "flag=true", "items=[1, 2]", "word=hello", "eq=a=b", "empty=", "q='x'"], None
    ) == {
        "n": 5,
        "flag": True,
        "items": [1, 2],
        "word": "hello",
        "eq": "a=b",
        "empty": "",
        "q": "'x'",
    }
    assert parse_arguments(["key=app:2"], '{"key": "app:1", "count": 3}') == {
        "key": "app:2",
        "count": 3,
    }
    for pairs, raw_json in ((["novalue"], None), (["=x"], None), ([], "[1]"), ([], "{")):
        with pytest.raises(UsageError):
            parse_arguments(pairs, raw_json)


def test_json_input_and_json_output(
    capsys: pytest.CaptureFixture[str], redis_server: ServerProcess, raw: redis.Redis
) -> None:
    code, out, err = run(
        capsys, redis_server, "call", "get", "--json", '{"key": "app:h"}', "--output", "json"
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["type"] == "hash"
    assert sorted(f["field"]["value"] for f in answer["fields"]) == ["f1", "f2"]
    assert answer["commands"] >= 1

    code, out, err = run(capsys, redis_server, "call", "get", "--arg", "key=app:h")
    assert code == 0, err
    assert out.startswith("fields (2)")
    assert ["f1", "v1"] in [line.split() for line in out.splitlines()]


def test_arg_number_reaches_the_tool_as_a_number(
    capsys: pytest.CaptureFixture[str], redis_server: ServerProcess, raw: redis.Redis
) -> None:
    code, out, err = run(
        capsys, redis_server, "call", "keys", "--arg", "pattern=app:*", "--arg", "limit=1",
        "--output", "json",
    )  # fmt: skip
    assert code == 0, err
    assert len(json.loads(out)["keys"]) == 1


def test_out_of_scope_key_is_refused_without_traceback(
    capsys: pytest.CaptureFixture[str], redis_server: ServerProcess, raw: redis.Redis
) -> None:
    code, out, err = run(capsys, redis_server, "call", "get", "--arg", "key=secret:1")
    assert code == 1
    assert out == ""
    assert "outside the allowed prefixes" in err
    assert "Traceback" not in err
    assert SECRET not in out + err


def test_writes_refused_unless_allow_writes(
    capsys: pytest.CaptureFixture[str], redis_server: ServerProcess, raw: redis.Redis
) -> None:
    args = ["call", "set", "--arg", "key=app:new", "--arg", "value=v1"]
    code, _, err = run(capsys, redis_server, *args)
    assert code == 1
    assert "writes are disabled" in err
    assert raw.get("app:new") is None

    code, _, err = run(capsys, redis_server, "--allow-writes", *args)
    assert code == 0, err
    assert raw.get("app:new") == b"v1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["call", "no_such_tool"], "no tool 'no_such_tool'"),
        (["call", "get", "--json", "{nope"], "--json is not valid JSON"),
        (["call", "get", "--arg", "key"], "expected KEY=VALUE"),
        (["--max-items", "0", "call", "keys"], "--max-items must be between"),
    ],
)
def test_bad_usage_exits_2(
    capsys: pytest.CaptureFixture[str],
    redis_server: ServerProcess,
    argv: list[str],
    message: str,
) -> None:
    code, _, err = run(capsys, redis_server, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_unreachable_redis_is_a_tool_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--redis-url", "redis://:hunter2@127.0.0.1:1/0", "call", "info"])
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot reach Redis" in err
    assert "hunter2" not in err


def test_demo_rate_limits_table(capsys: pytest.CaptureFixture[str]) -> None:
    arguments = json.dumps(
        {"identifier": BLOCKED_IP, "user_agent": BLOCKED_UA, "endpoint": "auth_login"}
    )
    code = cli.main(["--demo", "call", "inspect_rate_limits", "--json", arguments])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("limiters (1)")
    assert "sliding_log_zset" in out.splitlines()[2]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main(["--demo", "call", "keyspace_summary", "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is True
    drawn = terminal.getvalue()
    assert "keyspace_summary [" in drawn
    assert "100%" in drawn
    assert drawn.endswith("\r\033[K"), "the bar is erased before the answer"

    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    assert cli.main(["--demo", "call", "keyspace_summary"]) == 0
    assert pipe.getvalue() == ""


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    assert wants_colour(Terminal())
    assert not wants_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_colour(Terminal())
    answer: dict[str, Any] = {"a": "x", "n": 1, "ok": None, "rows": [{"k": "v"}]}
    coloured = render_answer(answer, colour=True)
    assert "\033[32m" in coloured
    assert "\033[" not in render_answer(answer, colour=False)
    plain = render_json({"a": [1, True, None]}, colour=False)
    assert json.loads(plain) == {"a": [1, True, None]}
    stripped = render_json({"a": [1, True, None], "b": {}}, colour=True)
    for code in ("\033[0m", "\033[34m", "\033[32m", "\033[36m", "\033[35m"):
        stripped = stripped.replace(code, "")
    assert json.loads(stripped) == {"a": [1, True, None], "b": {}}


def test_progress_bar_drawing() -> None:
    stream = Terminal()
    bar = ProgressBar(stream, "tool")
    bar.draw(50, 100, "half")
    assert "[############............]  50% half" in stream.getvalue()
    bar.close()
    assert stream.getvalue().endswith("\r\033[K")


def test_refusal_as_a_process_has_no_traceback(
    redis_server: ServerProcess, raw: redis.Redis
) -> None:
    script = Path(sys.executable).parent / "mita-redis-mcp"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/"),
        "REDIS_URL": redis_server.url,
        "MITA_REDIS_MCP_PREFIXES": "app:",
    }
    refused = subprocess.run(
        [str(script), "call", "get", "--arg", "key=secret:1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "outside the allowed prefixes" in refused.stderr
    assert "Traceback" not in refused.stderr
