"""The package as a user gets it: `uv build` gives a wheel and an sdist that hold what
they must (and no junk), install into a clean venv and run; `uvx` runs the built wheel
with no network once uv's cache holds the dependencies.

What the tests prove, and what they do not:

- The build runs `uv build` on the working tree, as a release would: the sdist first,
  then the wheel built *from that sdist* (so the sdist is complete enough to build).
- Installs go into fresh venvs made by `uv venv`, outside the project, with the
  dependencies resolved from PyPI through uv's cache (the first run downloads them).
  Each venv is checked to import the package from its own site-packages, not from
  the checkout.
- The offline `uvx` test first runs uvx online, which fills uv's cache with the
  dependencies (and the tool's environment); then it runs `uvx --offline` with every
  proxy variable pointing at a closed port, so a network access could not succeed
  even if `--offline` were ignored. It proves that a warm cache is enough; it does not
  prove that an empty cache works offline (nothing could).
"""

from __future__ import annotations

import email
import email.message
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from mita_redis_mcp import __version__

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "mita_redis_mcp"
PROFILES = sorted(path.name for path in (PACKAGE / "schema" / "profiles").glob("*.toml"))
DIST = "mita_redis_mcp"
# Generous: the first run downloads the dependencies and the build backend.
TIMEOUT = 300
# Nothing listens on port 9 (discard) here: any HTTP(S) request through it fails.
DEAD_PROXY = "http://127.0.0.1:9"

# Variables that would tie a subprocess to this checkout or its venv, or configure the
# server: the installs and runs below must stand on their own.
_DROPPED_ENV = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT", "REDIS_URL")


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _DROPPED_ENV and not name.startswith("MITA_REDIS_MCP_")
    }
    env["UV_NO_PROGRESS"] = "1"
    env.update(extra)
    return env


def uv_command() -> list[str]:
    """uv: the one running this suite (`uv run` sets UV), else uv on PATH or as a module."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found:
        return [found]
    probe = subprocess.run(
        [sys.executable, "-m", "uv", "--version"], capture_output=True, check=False
    )
    if probe.returncode == 0:
        return [sys.executable, "-m", "uv"]
    pytest.fail("uv is not available: the test command is `python3 -m uv run pytest`")


def uvx_command() -> list[str]:
    """uvx next to uv (pip and the installer put both in one directory), else `uv tool run`."""
    uv = uv_command()
    if len(uv) == 1:
        uvx = Path(uv[0]).with_name("uvx")
        if uvx.is_file():
            return [str(uvx)]
    return [*uv, "tool", "run"]


def run(
    command: Sequence[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; fail the test with its output unless it exits 0."""
    result = subprocess.run(
        list(command),
        cwd=cwd,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result


@dataclass(frozen=True)
class Dists:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = tmp_path_factory.mktemp("dist")
    run([*uv_command(), "build", "--out-dir", str(out), str(ROOT)], cwd=out)
    wheels = sorted(out.glob("*.whl"))
    sdists = sorted(out.glob("*.tar.gz"))
    assert [path.name for path in wheels] == [f"{DIST}-{__version__}-py3-none-any.whl"]
    assert [path.name for path in sdists] == [f"{DIST}-{__version__}.tar.gz"]
    return Dists(wheel=wheels[0], sdist=sdists[0])


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def wheel_text(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(name).decode()


def sdist_names(sdist: Path) -> list[str]:
    """Paths in the sdist, without its top directory."""
    top = f"{DIST}-{__version__}"
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert all(PurePosixPath(name).parts[0] == top for name in names), names
    return [str(PurePosixPath(*PurePosixPath(name).parts[1:])) for name in names if name != top]


def parse_metadata(text: str) -> email.message.Message:
    return email.message_from_string(text)


def check_metadata(metadata: email.message.Message) -> None:
    assert metadata["Name"] == "mita-redis-mcp"
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "# mita-redis-mcp" in str(metadata.get_payload())
    classifiers = set(metadata.get_all("Classifier") or [])
    assert {
        "Environment :: Console",
        "Framework :: AsyncIO",
        "Typing :: Typed",
        "Programming Language :: Python :: 3.11",
    } <= classifiers
    # PEP 639: the license expression replaces the License :: classifiers.
    assert not any(c.startswith("License ::") for c in classifiers)
    keywords = (metadata["Keywords"] or "").split(",")
    assert {"mcp", "redis"} <= set(keywords)
    requires = metadata.get_all("Requires-Dist") or []
    assert {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0] for r in requires} == {
        "mcp",
        "redis",
        "pydantic",
        "anyio",
        "fakeredis",
        "msgpack",
        "opentelemetry-api",
        "starlette",
        "uvicorn",
    }
    # redis-py with its compiled parser (the `hiredis` extra): SCAN pages parse in C.
    assert any(re.match(r"redis\[hiredis\]", r) for r in requires), requires


def test_changelog_records_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[?{re.escape(__version__)}\]?(\s|$)", changelog, re.MULTILINE), (
        f"CHANGELOG.md has no entry for {__version__}"
    )


@pytest.mark.slow
def test_wheel_holds_the_package_its_data_and_its_metadata(dists: Dists) -> None:
    names = wheel_names(dists.wheel)
    info = f"{DIST}-{__version__}.dist-info"

    expected_sources = {
        f"{DIST}/{path.relative_to(PACKAGE).as_posix()}" for path in PACKAGE.rglob("*.py")
    }
    assert expected_sources <= set(names), expected_sources - set(names)
    assert (
        sorted(
            PurePosixPath(name).name
            for name in names
            if name.startswith(f"{DIST}/schema/profiles/") and name.endswith(".toml")
        )
        == PROFILES
    )
    assert "mita_redis_mcp/py.typed" in names
    assert f"{info}/licenses/LICENSE" in names
    assert wheel_text(dists.wheel, f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_text()

    # Only the package and its dist-info: no tests, no caches, no bytecode.
    assert {PurePosixPath(name).parts[0] for name in names} == {DIST, info}
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]

    check_metadata(parse_metadata(wheel_text(dists.wheel, f"{info}/METADATA")))
    entry_points = wheel_text(dists.wheel, f"{info}/entry_points.txt")
    assert "mita-redis-mcp = mita_redis_mcp.__main__:main" in entry_points


@pytest.mark.slow
def test_sdist_holds_sources_tests_and_docs_and_no_junk(dists: Dists) -> None:
    names = set(sdist_names(dists.sdist))

    for required in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "PKG-INFO",
        "docs/profiles.md",  # tests/test_profiles.py checks it against the profiles
        "tests/conftest.py",
        "tests/servers.py",
        "tests/test_packaging.py",
        "src/mita_redis_mcp/py.typed",
    ):
        assert required in names, required
    sources = {
        path.relative_to(ROOT).as_posix()
        for pattern in ("*.py", "*.toml")
        for path in PACKAGE.rglob(pattern)
    }
    assert sources <= names, sources - names
    assert {f"src/mita_redis_mcp/schema/profiles/{name}" for name in PROFILES} <= names

    junk = [
        name
        for name in names
        if PurePosixPath(name).parts[0]
        in {".venv", ".git", ".ci", "bench", "dist", "build", ".mypy_cache", ".pytest_cache"}
        or name.startswith(("docs/bench", ".ruff_cache", ".hypothesis"))
        or "__pycache__" in name
        or name.endswith((".pyc", ".whl", ".lock"))
        # A real client configuration may hold a Redis URL with its password.
        or name == ".mcp.json"
    ]
    assert junk == []

    top = f"{DIST}-{__version__}"
    with tarfile.open(dists.sdist) as archive:
        member = archive.extractfile(f"{top}/PKG-INFO")
        assert member is not None
        with member:
            check_metadata(parse_metadata(member.read().decode()))


def install_and_run(dist: Path, venv: Path) -> None:
    """A fresh venv, ``dist`` installed in it from PyPI's dependencies, and its script run."""
    uv = uv_command()
    cwd = venv.parent
    run([*uv, "venv", "--python", sys.executable, str(venv)], cwd=cwd)
    python = venv / "bin" / "python"
    run([*uv, "pip", "install", "--python", str(python), str(dist)], cwd=cwd)

    # The package comes from this venv, with its data files, not from the checkout.
    where = run(
        [
            str(python),
            "-c",
            "import importlib.resources as r, mita_redis_mcp as m; "
            "print(m.__file__); print(m.__version__); "
            "print(r.files(m).joinpath('py.typed').is_file()); "
            "print(sorted(p.name for p in r.files(m).joinpath('schema', 'profiles').iterdir()"
            " if p.name.endswith('.toml')))",
        ],
        cwd=cwd,
    ).stdout.splitlines()
    assert Path(where[0]).resolve().is_relative_to(venv.resolve()), where[0]
    assert where[1:] == [__version__, "True", repr(PROFILES)]

    script = venv / "bin" / "mita-redis-mcp"
    version = run([str(script), "--version"], cwd=cwd)
    assert version.stdout.strip() == f"mita-redis-mcp {__version__}"

    # The tour needs no Redis; it loads the built-in profiles (the scope it prints
    # comes from mita.toml) and calls the tools through a real MCP client.
    demo = run([str(script), "demo"], cwd=cwd)
    assert f"mita-redis-mcp {__version__}" in demo.stdout
    assert "rate_limit:" in demo.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_clean_venv(dists: Dists, tmp_path: Path) -> None:
    install_and_run(dists.wheel, tmp_path / "venv")


@pytest.mark.slow
def test_sdist_builds_installs_and_runs_in_a_clean_venv(dists: Dists, tmp_path: Path) -> None:
    install_and_run(dists.sdist, tmp_path / "venv")


@pytest.mark.slow
def test_uvx_runs_the_wheel_offline_once_the_cache_is_warm(dists: Dists, tmp_path: Path) -> None:
    uvx = uvx_command()
    command = [
        *uvx,
        "--isolated",  # ignore any `uv tool install`ed mita-redis-mcp
        "--python",
        sys.executable,
        "--from",
        str(dists.wheel),
        "mita-redis-mcp",
        "--version",
    ]
    # Online: fills uv's cache with the wheel's dependencies.
    warm = run(command, cwd=tmp_path)
    assert warm.stdout.strip() == f"mita-redis-mcp {__version__}"

    no_network = clean_env(
        UV_OFFLINE="1",
        HTTP_PROXY=DEAD_PROXY,
        HTTPS_PROXY=DEAD_PROXY,
        ALL_PROXY=DEAD_PROXY,
        http_proxy=DEAD_PROXY,
        https_proxy=DEAD_PROXY,
        all_proxy=DEAD_PROXY,
    )
    for name in ("NO_PROXY", "no_proxy"):
        no_network.pop(name, None)
    offline = run([command[0], "--offline", *command[1:]], cwd=tmp_path, env=no_network)
    assert offline.stdout.strip() == f"mita-redis-mcp {__version__}"
