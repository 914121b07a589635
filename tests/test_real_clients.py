"""Real MCP clients launch the server the way the docs tell people to, through ``uvx``
from this checkout.

- The MCP Inspector CLI (npm ``@modelcontextprotocol/inspector``) starts the server with
  the command, args and env of ``.mcp.json.example``'s local entry, lists its tools and
  calls ``get`` and ``keys`` against a real redis-server.
- Claude Code (npm ``@anthropic-ai/claude-code``), with a throwaway HOME in which the
  project's ``.mcp.json`` is approved, reports every server of that file connected in
  ``claude mcp list``. ``mcp list`` needs no login and no network beyond the package
  indexes ``uvx`` resolves from.

Both clients come from ``.ci/node_modules``, pinned by ``.ci/package-lock.json`` and
installed by ``.ci/run`` (locally: ``npm ci --prefix .ci``); MITA_REDIS_MCP_NODE_BIN
names another directory holding ``mcp-inspector`` and ``claude``. Without them the tests
skip, or fail when CI is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import READ_TOOLS, REQUIRE_SERVERS
from tests.servers import ServerProcess

CHECKOUT = Path(__file__).resolve().parent.parent
NODE_BIN = Path(os.environ.get("MITA_REDIS_MCP_NODE_BIN") or CHECKOUT / ".ci/node_modules/.bin")
# Each client run starts `uvx`, which may revalidate the package index: generous, bounded.
TIMEOUT = 120
LOCAL_ENTRY = "mita-redis-local"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def client_binary(name: str) -> Path:
    path = NODE_BIN / name
    if not os.access(path, os.X_OK):
        reason = f"{path} is missing: install the real clients with `npm ci --prefix .ci`"
        if REQUIRE_SERVERS:
            pytest.fail(f"{reason}; CI requires them")
        pytest.skip(reason)
    return path


def uvx_dir(tmp_path: Path) -> str:
    """A directory holding `uvx`. Inside `uv run`, uvx need not be on PATH; uv is ($UV)."""
    found = shutil.which("uvx")
    if found is not None:
        return str(Path(found).parent)
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is not None and (Path(uv).parent / "uvx").is_file():
        return str(Path(uv).parent)
    shim_dir = tmp_path / "uvx-bin"
    shim_dir.mkdir()
    shim = shim_dir / "uvx"
    runner = f'"{uv}" tool run' if uv else f'"{sys.executable}" -m uv tool run'
    shim.write_text(f'#!/bin/sh\nexec {runner} "$@"\n')
    shim.chmod(0o755)
    return str(shim_dir)


def client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's environment, with `uvx` on PATH and the clients' own settings removed."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CLAUDE", "ANTHROPIC", "MCP_", "REDIS_URL", "MITA_REDIS_MCP_"))
    }
    env["PATH"] = os.pathsep.join([uvx_dir(tmp_path), env.get("PATH", "")])
    env.update(extra)
    return env


def start(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """A client in a process group of its own, so that whatever it spawns can be stopped."""
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    """Kill what is left of the client's process group (the servers it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    """Wait, bounded, for a started client; stop its group either way."""
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{process.args!r} took over {TIMEOUT}s")
    finally:
        stop(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def entries(config: Path) -> dict[str, dict[str, Any]]:
    servers: dict[str, dict[str, Any]] = json.loads(config.read_text())["mcpServers"]
    return servers


def from_checkout(args: list[str]) -> list[str]:
    """`--from .` means the directory the client starts in; here, this checkout."""
    assert args[:3] == ["--compile-bytecode", "--from", "."], args
    return [*args[:2], str(CHECKOUT), *args[3:]]


def expand(value: str, variables: dict[str, str]) -> str:
    """Claude Code's ${VAR} and ${VAR:-default}, from ``variables`` only."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in variables:
            return variables[name]
        assert default is not None, f"${{{name}}} has no value and no default"
        return default

    return VARIABLE.sub(one, value)


def inspector_command(inspector: Path, server_url: str, *request: str) -> list[str]:
    """The Inspector CLI launching `.mcp.json.example`'s local entry, as it is written."""
    entry = entries(CHECKOUT / ".mcp.json.example")[LOCAL_ENTRY]
    assert entry["command"] == "uvx"
    env = {key: expand(value, {"REDIS_URL": server_url}) for key, value in entry["env"].items()}
    env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    return [str(inspector), "--cli", *env_args, "uvx", *from_checkout(entry["args"]), *request]


def answer(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    try:
        parsed: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"the Inspector printed no JSON:\n{result.stdout}\n{result.stderr}")
    return parsed


def test_inspector_cli_lists_and_calls_the_tools(
    redis_server: ServerProcess, tmp_path: Path
) -> None:
    inspector = client_binary("mcp-inspector")
    with redis_server.client() as raw:
        raw.flushall()
        raw.hset("mita:blacklist:metrics", mapping={"total_blacklisted": "3"})
        raw.set("revoked:jwt:abc", "1")
        raw.set("other:secret", "not for the model")

    requests = {
        "list": ["--method", "tools/list"],
        "get": [
            *("--method", "tools/call", "--tool-name", "get"),
            *("--tool-arg", "key=mita:blacklist:metrics"),
        ],
        "keys": ["--method", "tools/call", "--tool-name", "keys", "--tool-arg", "pattern=*"],
    }
    env = client_env(tmp_path)
    # One server per request; started together, since each `uvx` launch takes seconds.
    processes = {
        name: start(inspector_command(inspector, redis_server.url, *request), env, tmp_path)
        for name, request in requests.items()
    }
    try:
        results = {name: finish(process) for name, process in processes.items()}
    finally:
        for process in processes.values():
            stop(process)

    listed = answer(results["list"])
    assert [tool["name"] for tool in listed["tools"]] == READ_TOOLS

    got = answer(results["get"])
    assert got["isError"] is False, got
    metrics = got["structuredContent"]
    assert metrics["demo"] is False
    assert metrics["type"] == "hash"
    fields = {item["field"]["value"]: item["value"]["value"] for item in metrics["fields"]}
    assert fields == {"total_blacklisted": "3"}

    keys = answer(results["keys"])
    assert keys["isError"] is False, keys
    found = sorted(entry["key"] for entry in keys["structuredContent"]["keys"])
    assert found == ["mita:blacklist:metrics", "revoked:jwt:abc"]


def test_claude_code_reports_the_project_servers_connected(
    redis_server: ServerProcess, tmp_path: Path
) -> None:
    claude = client_binary("claude")
    servers = entries(CHECKOUT / ".mcp.json")
    assert LOCAL_ENTRY in servers
    project = (tmp_path / "project").resolve()
    project.mkdir()
    for entry in servers.values():
        entry["args"] = from_checkout(entry["args"])
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": servers}, indent=2))

    # A fresh HOME, as on a new machine: the only state is the approval a developer gives
    # interactively (trust the folder, enable the project's servers).
    home = tmp_path / "home"
    home.mkdir()
    approval = {"hasTrustDialogAccepted": True, "enabledMcpjsonServers": sorted(servers)}
    (home / ".claude.json").write_text(json.dumps({"projects": {str(project): approval}}))

    real_home = Path.home()
    uv_cache = Path(os.environ.get("XDG_CACHE_HOME") or real_home / ".cache") / "uv"
    uv_data = Path(os.environ.get("XDG_DATA_HOME") or real_home / ".local/share") / "uv"
    env = client_env(
        tmp_path,
        HOME=str(home),
        REDIS_URL=redis_server.url,
        # Keep uv's cache and Pythons, which live under the real HOME.
        UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR") or str(uv_cache),
        UV_PYTHON_INSTALL_DIR=os.environ.get("UV_PYTHON_INSTALL_DIR") or str(uv_data / "python"),
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
    )
    result = finish(start([str(claude), "mcp", "list"], env, project))

    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, output
    status = {line.split(":", 1)[0]: line for line in result.stdout.splitlines() if ": " in line}
    for name in servers:
        assert name in status, output
        assert "Connected" in status[name], output
        assert "Failed" not in status[name], output
