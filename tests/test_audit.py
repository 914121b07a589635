"""The audit log: one JSON line per tool call (time, tool, keys touched with credential
parts redacted, commands, duration, outcome), never a value; it never breaks a call."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mita_redis_mcp.app import App
from mita_redis_mcp.audit import MAX_KEYS_LISTED, AuditLog
from mita_redis_mcp.backend import _KEY_ARGUMENTS, Backend, Meter
from mita_redis_mcp.config import Settings
from mita_redis_mcp.errors import ConfigError
from mita_redis_mcp.redact import fingerprint
from mita_redis_mcp.server import build_server
from tests.conftest import MakeApp, Target, call_tool

pytestmark = pytest.mark.anyio

SECRET_VALUE = "hunter2-the-secret-VALUE"
FIELDS = {"time", "tool", "outcome", "error", "commands", "duration_ms", "keys", "key_count"}


def audited(app: App, target: str | Path) -> App:
    audit: Any = target
    return dataclasses.replace(app, settings=dataclasses.replace(app.settings, audit=audit))


def lines_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_one_line_per_call_with_every_field_and_never_a_value(
    make_app: MakeApp, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    target.raw.set("app:secret", SECRET_VALUE)
    target.raw.hset("app:hash", mapping={"field": SECRET_VALUE})
    app = audited(make_app(allow_writes=True), "stderr")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("get", {"key": "app:secret"}),
        ("get", {"key": "app:hash"}),
        ("keys", {"pattern": "app:*"}),
        ("set", {"key": "app:written", "value": SECRET_VALUE}),
        ("delete", {"keys": ["app:written"]}),
    ]
    for name, arguments in calls:
        result = await call_tool(app, name, arguments)
        assert not result.is_error, result.content
    captured = capsys.readouterr()
    assert SECRET_VALUE not in captured.err
    assert SECRET_VALUE not in captured.out
    lines = lines_of(captured.err)
    assert [line["tool"] for line in lines] == [name for name, _ in calls]
    for line in lines:
        assert set(line) == FIELDS
        assert line["outcome"] == "ok"
        assert line["error"] is None
        assert line["commands"] > 0
        assert line["duration_ms"] >= 0
        assert line["time"].endswith("+00:00")
        assert line["key_count"] == len(line["keys"])
    assert lines[0]["keys"] == ["app:secret"]
    assert lines[1]["keys"] == ["app:hash"]
    assert set(lines[2]["keys"]) == {"app:secret", "app:hash"}
    assert lines[3]["keys"] == ["app:written"]
    assert lines[4]["keys"] == ["app:written"]


async def test_a_refused_call_is_logged_with_its_error_class(
    make_app: MakeApp, capsys: pytest.CaptureFixture[str]
) -> None:
    app = audited(make_app(), "stderr")
    assert (await call_tool(app, "get", {"key": "other:secret"})).is_error
    assert (await call_tool(app, "set", {"key": "app:x", "value": SECRET_VALUE})).is_error
    err = capsys.readouterr().err
    assert SECRET_VALUE not in err
    first, second = lines_of(err)
    assert (first["tool"], first["outcome"], first["error"]) == ("get", "refused", "OutOfScope")
    assert first["keys"] == []
    assert first["commands"] == 0
    assert (second["outcome"], second["error"]) == ("refused", "WritesDisabled")


async def test_audit_off_writes_nothing(
    make_app: MakeApp, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not (await call_tool(make_app(), "get", {"key": "app:none"})).is_error
    assert lines_of(capsys.readouterr().err) == []


async def test_audit_log_redacts_fastapi_users_tokens_and_flask_session_ids(
    make_app: MakeApp, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    token = secrets.token_urlsafe(32)
    sid = secrets.token_urlsafe(32)
    target.raw.set(f"fastapi_users_token:{token}", "42", ex=3600)
    target.raw.set(f"session:{sid}", json.dumps({"user": SECRET_VALUE}), ex=3600)
    app = audited(make_app(profiles=("fastapi-users", "flask-session"), prefixes=()), "stderr")
    assert not (await call_tool(app, "list_sessions", {})).is_error
    assert not (await call_tool(app, "get", {"key": f"session:{sid}"})).is_error
    err = capsys.readouterr().err
    assert token not in err
    assert sid not in err
    assert SECRET_VALUE not in err
    listed, got = lines_of(err)
    assert listed["key_count"] == 2
    assert sorted(k.split(":")[0] for k in listed["keys"]) == ["fastapi_users_token", "session"]
    assert all("sha256:" in k for k in listed["keys"])
    assert got["keys"] == [f"session:{sid[:4]}…[{len(sid)} chars, {fingerprint(sid)}]"]


async def test_token_like_parts_of_keys_no_profile_knows_are_redacted(
    make_app: MakeApp, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    api_key = secrets.token_hex(20)
    target.raw.set(f"app:apikey:{api_key}:owner", "1")
    app = audited(make_app(), "stderr")
    assert not (await call_tool(app, "get", {"key": f"app:apikey:{api_key}:owner"})).is_error
    (line,) = lines_of(capsys.readouterr().err)
    assert api_key not in json.dumps(line)
    (shown,) = line["keys"]
    assert re.fullmatch(r"app:apikey:.{4}…\[40 chars, sha256:[0-9a-f]{12}\]:owner", shown)


def test_ordinary_words_stay_readable() -> None:
    log = AuditLog("stderr", [])
    assert log.shown(b"app:user_profile_settings_for_everyone:v") == (
        "app:user_profile_settings_for_everyone:v"
    )
    assert log.shown(b"app:user:42") == "app:user:42"


async def test_keys_listed_are_bounded_and_counted(
    make_app: MakeApp, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(MAX_KEYS_LISTED + 10):
        target.raw.set(f"app:k{i}", SECRET_VALUE)
    app = audited(make_app(), "stderr")
    assert not (await call_tool(app, "keys", {"pattern": "app:*", "limit": 100})).is_error
    err = capsys.readouterr().err
    (line,) = lines_of(err)
    assert len(line["keys"]) == MAX_KEYS_LISTED
    assert line["key_count"] == MAX_KEYS_LISTED + 10
    assert SECRET_VALUE not in err


async def test_audit_file_is_created_0600_and_appended(
    make_app: MakeApp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.log"
    app = audited(make_app(), path)
    for _ in range(2):
        assert not (await call_tool(app, "get", {"key": "app:1"})).is_error
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [line["tool"] for line in lines_of(path.read_text())] == ["get", "get"]
    assert lines_of(capsys.readouterr().err) == []


async def test_an_audit_failure_never_breaks_a_call(
    make_app: MakeApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    app = audited(make_app(), gone / "audit.log")
    gone.rmdir()
    with caplog.at_level(logging.WARNING, logger="mita_redis_mcp.audit"):
        async with Client(build_server(app)) as client:
            for _ in range(3):
                result = await client.call_tool("get", {"key": "app:1"})
                assert not result.is_error
                assert result.structured_content is not None
    warnings = [r for r in caplog.records if r.name == "mita_redis_mcp.audit"]
    assert len(warnings) == 1
    assert "cannot write" in warnings[0].getMessage()


def test_audit_setting_from_env_and_flag(tmp_path: Path) -> None:
    assert Settings.load({}, {}).audit is None
    assert Settings.load({}, {"MITA_REDIS_MCP_AUDIT": "off"}).audit is None
    assert Settings.load({}, {"MITA_REDIS_MCP_AUDIT": "stderr"}).audit == "stderr"
    path = tmp_path / "audit.log"
    assert Settings.load({"audit": str(path)}, {"MITA_REDIS_MCP_AUDIT": "off"}).audit == path
    for bad in (str(tmp_path), str(tmp_path / "missing" / "audit.log")):
        with pytest.raises(ConfigError) as caught:
            Settings.load({}, {"MITA_REDIS_MCP_AUDIT": bad})
        assert caught.value.problems[0].startswith("MITA_REDIS_MCP_AUDIT")


def test_every_key_bearing_command_the_tools_send_is_audited() -> None:
    """A command added to the backend without its key position would touch keys the
    audit log never names: REQUIRED_COMMANDS lists every command the tools send."""
    for _kind, command, _why in Backend.REQUIRED_COMMANDS:
        words = command.split()
        if "{key}" in words:
            assert words[0] in _KEY_ARGUMENTS, command
            meter = Meter(track_keys=True)
            meter.touch([b"app:k" if w == "{key}" else w for w in words])
            assert list(meter.keys) == [b"app:k"], command
