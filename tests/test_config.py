"""Settings and the command line: every bad value is named on one line, all of them at
once, with exit code 2 and no traceback; flags win over the environment; the password
never appears in a message; dangerous options are announced at start."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mita_redis_mcp import cli
from mita_redis_mcp.config import OPTIONS, Limits, Settings, redact_url
from mita_redis_mcp.errors import ConfigError
from mita_redis_mcp.schema import load_profiles, scope_prefixes
from tests.servers import free_port

SECRET = "s3cret-pw"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' own settings only: none leaks in from the shell that runs them."""
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    """Files where the TLS options expect PEM files (only their existence is checked)."""
    files = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN PLACEHOLDER-----\n")
        files[name] = str(path)
    return files


def reported(err: str) -> list[str]:
    """The problems ``cli.main`` printed: one line each, under one heading."""
    assert "Traceback" not in err
    head, *lines = err.rstrip("\n").split("\n")
    assert head == "mita-redis-mcp: invalid configuration:"
    assert lines
    assert all(line.startswith("  - ") for line in lines), lines
    return [line.removeprefix("  - ") for line in lines]


def problems_of(environ: dict[str, str], **flags: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Settings.load(flags, environ)
    return caught.value.problems


# -- one bad value, one line naming it ---------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(
            {"REDIS_URL": "http://localhost:6379/0"},
            "REDIS_URL must start with redis://, rediss://, unix:// or redis+sentinel://",
            id="bad-scheme",
        ),
        pytest.param({"REDIS_URL": "localhost:6379"}, "REDIS_URL must start", id="no-scheme"),
        pytest.param({"REDIS_URL": "redis://:6379/0"}, "REDIS_URL has no host", id="no-host"),
        pytest.param(
            {"REDIS_URL": "redis://localhost:6379/zero"},
            "REDIS_URL: the database must be a number",
            id="bad-db",
        ),
        pytest.param(
            {"REDIS_URL": "redis://localhost:6379/²"},
            "REDIS_URL: the database must be a number",
            id="non-ascii-digit-db",
        ),
        pytest.param(
            {"REDIS_URL": "unix:///tmp/redis.sock?db=first"},
            "REDIS_URL: the database must be a number",
            id="bad-unix-db",
        ),
        pytest.param({"REDIS_URL": "unix://"}, "needs a socket path", id="unix-no-path"),
        pytest.param(
            {"REDIS_URL": "redis://localhost:99999/0"},
            "REDIS_URL is not a valid URL",
            id="port-out-of-range",
        ),
        pytest.param({"REDIS_URL": "redis://localhost:0/0"}, "port 0", id="port-zero"),
        pytest.param(
            {"MITA_REDIS_MCP_MAX_ITEMS": "lots"},
            "MITA_REDIS_MCP_MAX_ITEMS must be a whole number, not 'lots'",
            id="non-numeric-int",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_MAX_VALUE_BYTES": "1.5"},
            "MITA_REDIS_MCP_MAX_VALUE_BYTES must be a whole number",
            id="fractional-int",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_COMMAND_TIMEOUT": "soon"},
            "MITA_REDIS_MCP_COMMAND_TIMEOUT must be a number, not 'soon'",
            id="non-numeric-float",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_MAX_ITEMS": "0"},
            "MITA_REDIS_MCP_MAX_ITEMS must be between 1 and 10000",
            id="int-below-range",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_MAX_ITEMS": "10001"},
            "MITA_REDIS_MCP_MAX_ITEMS must be between 1 and 10000",
            id="int-above-range",
        ),
        pytest.param(
            # 4 MiB + 1: a wider window would take the server past its 150 MB bound.
            {"MITA_REDIS_MCP_MAX_VALUE_BYTES": "4194305"},
            "MITA_REDIS_MCP_MAX_VALUE_BYTES must be between 1 and 4194304",
            id="value-window-above-4-mib",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_SCAN_BUDGET": "-1"},
            "MITA_REDIS_MCP_SCAN_BUDGET must be between 1 and",
            id="negative-budget",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_COMMAND_TIMEOUT": "0"},
            "MITA_REDIS_MCP_COMMAND_TIMEOUT must be between 0.01 and 300",
            id="float-below-range",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_COMMAND_TIMEOUT": "inf"},
            "MITA_REDIS_MCP_COMMAND_TIMEOUT must be a finite number",
            id="infinite-float",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_COMMAND_TIMEOUT": "nan"},
            "MITA_REDIS_MCP_COMMAND_TIMEOUT must be a finite number",
            id="nan-float",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_ALLOW_WRITES": "maybe"},
            "MITA_REDIS_MCP_ALLOW_WRITES must be true or false (1/0, yes/no), not 'maybe'",
            id="bad-boolean",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_PREFIXES": ""},
            "MITA_REDIS_MCP_PREFIXES is empty",
            id="empty-prefix-list",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_PREFIXES": " , ,"},
            "MITA_REDIS_MCP_PREFIXES is empty",
            id="blank-prefix-list",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_PREFIXES": "app:,ses\x1bsion:"},
            "MITA_REDIS_MCP_PREFIXES: prefix 'ses\\x1bsion:' contains a control character",
            id="escape-in-prefix",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_PREFIXES": "app\tname:"},
            "contains a control character",
            id="tab-in-prefix",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_PREFIXES": "a" * 300},
            "MITA_REDIS_MCP_PREFIXES: prefix 'aaaaaaaaaaaaaaaaaaaa'... is longer than 256 bytes",
            id="long-prefix",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_LOG_LEVEL": "chatty"},
            "MITA_REDIS_MCP_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR",
            id="bad-log-level",
        ),
        pytest.param(
            {"MITA_REDIS_MCP_TLS_INSECURE_SKIP_VERIFY": "1"},
            "TLS options are set but REDIS_URL is not a rediss:// URL",
            id="tls-without-rediss",
        ),
        pytest.param(
            {"REDIS_URL": "rediss://localhost:6380", "MITA_REDIS_MCP_TLS_CA_FILE": "/nowhere.pem"},
            "MITA_REDIS_MCP_TLS_CA_FILE: no readable file at '/nowhere.pem'",
            id="missing-ca-file",
        ),
    ],
)
def test_bad_value_is_one_line_naming_the_option(
    environ: dict[str, str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert cli.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    problems = reported(captured.err)
    assert len(problems) == 1, problems
    assert expected in problems[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["--redis-url", "ftp://h/0"], "--redis-url must start with", id="url"),
        pytest.param(["--max-items", "many"], "--max-items must be a whole number", id="int"),
        pytest.param(["--scan-budget", "0"], "--scan-budget must be between 1 and", id="range"),
        pytest.param(["--command-timeout", "x"], "--command-timeout must be a number", id="float"),
        pytest.param(["--prefix", ""], "--prefix is empty", id="empty-prefix"),
        pytest.param(["--prefix", "app:\nx"], "control character", id="newline-in-prefix"),
        pytest.param(["--log-level", "loud"], "--log-level must be DEBUG", id="level"),
        pytest.param(["serve", "--max-items", "0"], "--max-items must be between", id="serve"),
        pytest.param(["--max-items", "0", "serve"], "--max-items must be between", id="before"),
        pytest.param(["demo", "--prefix", ""], "--prefix is empty", id="demo"),
    ],
)
def test_bad_flag_is_one_line_naming_the_flag(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    problems = reported(captured.err)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_unset_variable_passed_literally_gets_a_helpful_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What Claude Code passes for "${REDIS_URL}" in .mcp.json when the variable is unset.
    monkeypatch.setenv("REDIS_URL", "${REDIS_URL}")
    assert cli.main([]) == 2
    [problem] = reported(capsys.readouterr().err)
    assert problem.startswith("REDIS_URL is the literal text ${REDIS_URL}")
    assert "was not set in the environment that launched the server" in problem
    assert "export it" in problem


def test_every_bad_value_is_reported_together(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "http://localhost/0")
    monkeypatch.setenv("MITA_REDIS_MCP_ALLOW_WRITES", "perhaps")
    monkeypatch.setenv("MITA_REDIS_MCP_SCAN_BUDGET", "lots")
    assert cli.main(["--max-items", "0", "--prefix", "a\x07:"]) == 2
    problems = reported(capsys.readouterr().err)
    assert len(problems) == 5, problems
    for name in (
        "REDIS_URL",
        "MITA_REDIS_MCP_ALLOW_WRITES",
        "MITA_REDIS_MCP_SCAN_BUDGET",
        "--max-items",
        "--prefix",
    ):
        assert sum(problem.startswith(name) for problem in problems) == 1, (name, problems)


def test_parse_problems_and_cross_checks_are_reported_together(pem: dict[str, str]) -> None:
    problems = problems_of(
        {"MITA_REDIS_MCP_MAX_ITEMS": "x", "MITA_REDIS_MCP_TLS_CERT_FILE": pem["cert"]}
    )
    assert problems == [
        "MITA_REDIS_MCP_MAX_ITEMS must be a whole number, not 'x'",
        "TLS options are set but REDIS_URL is not a rediss:// URL",
        "--tls-cert-file and --tls-key-file must be given together",
    ]


# -- TLS options ----------------------------------------------------------------------


def test_tls_options_need_a_rediss_url(pem: dict[str, str]) -> None:
    problems = problems_of({"REDIS_URL": "redis://localhost:6379/0"}, tls_ca_file=pem["ca"])
    assert problems == ["TLS options are set but REDIS_URL is not a rediss:// URL"]


@pytest.mark.parametrize("given", ["tls_cert_file", "tls_key_file"])
def test_client_certificate_and_key_go_together(given: str, pem: dict[str, str]) -> None:
    path = pem["cert"] if given == "tls_cert_file" else pem["key"]
    problems = problems_of({"REDIS_URL": "rediss://localhost:6380"}, **{given: path})
    assert problems == ["--tls-cert-file and --tls-key-file must be given together"]


def test_skip_verify_contradicts_a_ca_file(pem: dict[str, str]) -> None:
    problems = problems_of(
        {"REDIS_URL": "rediss://localhost:6380", "MITA_REDIS_MCP_TLS_INSECURE_SKIP_VERIFY": "yes"},
        tls_ca_file=pem["ca"],
    )
    assert problems == ["--tls-insecure-skip-verify contradicts --tls-ca-file: choose one"]


def test_complete_tls_settings_load(pem: dict[str, str]) -> None:
    settings = Settings.load(
        {"tls_cert_file": pem["cert"], "tls_key_file": pem["key"]},
        {"REDIS_URL": "rediss://localhost:6380/2", "MITA_REDIS_MCP_TLS_CA_FILE": pem["ca"]},
    )
    assert settings.tls_ca_file == Path(pem["ca"])
    assert settings.tls_cert_file == Path(pem["cert"])
    assert settings.tls_key_file == Path(pem["key"])
    assert settings.tls_insecure_skip_verify is False


# -- good values, and which source wins ----------------------------------------------------


def test_defaults_without_any_setting() -> None:
    settings = Settings.load({}, {})
    assert settings.redis_url.get_secret_value() == "redis://localhost:6379/0"
    assert settings.prefixes == ()
    profiles = settings.load_profiles()
    assert [p.name for p in profiles] == ["mita"]
    assert settings.scope_prefixes(profiles) == scope_prefixes(load_profiles(["mita"]))
    assert "rate_limit:" in settings.scope_prefixes(profiles)
    assert settings.allow_writes is False
    assert settings.allow_all_keys is False
    assert settings.limits == Limits()
    assert settings.log_level == "INFO"


def test_environment_values_are_parsed() -> None:
    settings = Settings.load(
        {},
        {
            "REDIS_URL": "unix:///run/redis.sock?db=3",
            "MITA_REDIS_MCP_PREFIXES": " app: , jobs: ,",
            "MITA_REDIS_MCP_ALLOW_WRITES": "Yes",
            "MITA_REDIS_MCP_ALLOW_ALL_KEYS": "off",
            "MITA_REDIS_MCP_MAX_VALUE_BYTES": "4096",
            "MITA_REDIS_MCP_MAX_ITEMS": "10000",
            "MITA_REDIS_MCP_SCAN_BUDGET": "1",
            "MITA_REDIS_MCP_COMMAND_TIMEOUT": "0.25",
            "MITA_REDIS_MCP_LOG_LEVEL": "debug",
        },
    )
    assert settings.prefixes == ("app:", "jobs:")
    assert settings.allow_writes is True
    assert settings.allow_all_keys is False
    assert settings.limits == Limits(
        max_value_bytes=4096, max_items=10_000, scan_budget=1, command_timeout=0.25
    )
    assert settings.log_level == "DEBUG"


def test_flags_override_the_environment() -> None:
    environ = {
        "REDIS_URL": "redis://env-host:6379/0",
        "MITA_REDIS_MCP_PREFIXES": "env:",
        "MITA_REDIS_MCP_MAX_ITEMS": "50",
        # Shadowed by the flag, so never parsed: not an error.
        "MITA_REDIS_MCP_SCAN_BUDGET": "lots",
    }
    settings = Settings.load(
        {
            "redis_url": "redis://flag-host:6379/1",
            "prefixes": ["flag:", "other:"],
            "max_items": "7",
            "scan_budget": "500",
        },
        environ,
    )
    assert settings.redis_url.get_secret_value() == "redis://flag-host:6379/1"
    assert settings.prefixes == ("flag:", "other:")
    assert settings.limits.max_items == 7
    assert settings.limits.scan_budget == 500


@pytest.mark.parametrize(
    "argv",
    [
        ["--prefix", "app:", "--max-items", "5", "--allow-writes", "--demo", "serve"],
        ["serve", "--prefix", "app:", "--max-items", "5", "--allow-writes", "--demo"],
        ["--prefix", "app:", "--max-items", "5", "--allow-writes", "--demo"],
    ],
    ids=["before-subcommand", "after-subcommand", "no-subcommand"],
)
def test_flags_count_wherever_they_stand(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert args.prefixes == ["app:"]
    assert args.max_items == "5"
    assert args.allow_writes is True
    assert args.demo is True


# -- the password never shows -------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"http://:{SECRET}@localhost:6379/0",
        f"redis://:{SECRET}@:6379/0",
        f"redis://:{SECRET}@localhost:port/0",
        f"redis://:{SECRET}@localhost:6379/zero",
        # An unencoded '/' in the password: what follows it reads as the database.
        f"redis://user:12/{SECRET}@localhost:6379/0",
        f"redis://localhost:6379/zero?password={SECRET}",
        f"unix://:{SECRET}@/tmp/redis.sock?db=x",
    ],
)
def test_password_never_appears_in_a_config_error(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("MITA_REDIS_MCP_TLS_INSECURE_SKIP_VERIFY", "1")
    assert cli.main([]) == 2
    captured = capsys.readouterr()
    assert reported(captured.err)
    assert SECRET not in captured.err
    assert SECRET not in captured.out


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (f"redis://user:{SECRET}@host:6379/0", "redis://user:***@host:6379/0"),
        (f"rediss://:{SECRET}@host:6380", "rediss://:***@host:6380"),
        (f"redis://{SECRET}@host:6379/0", "redis://***@host:6379/0"),
        (f"redis://user:p@{SECRET}@host/0", "redis://user:***@host/0"),
        (f"redis://host:6379/0?password={SECRET}", "redis://host:6379/0?password=***"),
        (
            f"redis://host/0?db=1&Password={SECRET}&name=x",
            "redis://host/0?db=1&password=***&name=x",
        ),
        (
            f"unix:///tmp/redis.sock?password={SECRET}&db=2",
            "unix:///tmp/redis.sock?password=***&db=2",
        ),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://[::1", "<unparseable URL>"),
        (
            f"redis+sentinel://:{SECRET}@s1:26379,s2:26380/mymaster/0",
            "redis+sentinel://:***@s1:26379,s2:26380/mymaster/0",
        ),
        (
            f"rediss+sentinel://app:{SECRET}@s1,[::1]:26379/mymaster?sentinel_password={SECRET}",
            "rediss+sentinel://app:***@s1,[::1]:26379/mymaster?sentinel_password=***",
        ),
        (
            f"redis+sentinel://s1/m?sentinel_username=ops&Sentinel_Password={SECRET}",
            "redis+sentinel://s1/m?sentinel_username=ops&sentinel_password=***",
        ),
    ],
    ids=[
        "userinfo-password",
        "password-only",
        "bare-userinfo",
        "unencoded-at",
        "query-password",
        "query-password-any-case",
        "unix-query-password",
        "no-password",
        "unparseable",
        "sentinel-userinfo-password",
        "sentinel-both-passwords",
        "sentinel-password-any-case",
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert SECRET not in redact_url(url)


def test_settings_never_show_the_url_in_their_repr() -> None:
    settings = Settings.load({}, {"REDIS_URL": f"redis://user:{SECRET}@localhost:6379/0"})
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert settings.safe_url == "redis://user:***@localhost:6379/0"


# -- the announcement at start ----------------------------------------------------------


def test_announce_warns_about_dangerous_options(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.load(
        {"allow_all_keys": True, "tls_insecure_skip_verify": True},
        {"REDIS_URL": f"rediss://:{SECRET}@localhost:6380/0"},
    )
    with caplog.at_level(logging.INFO, logger="mita_redis_mcp"):
        cli._announce(settings)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("--allow-all-keys")
    assert warnings[1].startswith("--tls-insecure-skip-verify")
    assert "rediss://:***@localhost:6380/0" in caplog.text
    assert SECRET not in caplog.text


def test_announce_is_quiet_by_default(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.load({"prefixes": ["app:", "jobs:"]}, {})
    with caplog.at_level(logging.INFO, logger="mita_redis_mcp"):
        cli._announce(settings)
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.INFO]
    assert "(read-only)" in caplog.text
    assert "scope: app:, jobs:" in caplog.text


# -- the real process ---------------------------------------------------------------------


def _run(argv: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The server as a client launches it, with stdin closed: it exits after starting."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), **environ}
    return subprocess.run(
        [sys.executable, "-m", "mita_redis_mcp", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_process_exits_2_with_every_problem_and_no_traceback() -> None:
    result = _run(
        ["--max-items", "0"],
        {"REDIS_URL": f"redis://user:12/{SECRET}@localhost:6379/0"},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    problems = reported(result.stderr)
    assert len(problems) == 2, problems
    assert problems[0].startswith("REDIS_URL: the database must be a number")
    assert problems[1].startswith("--max-items must be between 1 and 10000")
    assert SECRET not in result.stderr


def test_process_announces_dangerous_options_on_stderr() -> None:
    # Nothing listens on the port: the server connects lazily, so it starts anyway.
    url = f"rediss://:{SECRET}@127.0.0.1:{free_port()}/0"
    result = _run(["--allow-all-keys", "--tls-insecure-skip-verify", "serve"], {"REDIS_URL": url})
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "WARNING mita_redis_mcp: --allow-all-keys: every key" in result.stderr
    assert "WARNING mita_redis_mcp: --tls-insecure-skip-verify: the server's TLS" in result.stderr
    assert "rediss://:***@127.0.0.1" in result.stderr
    assert SECRET not in result.stderr


def test_process_takes_flags_over_environment() -> None:
    result = _run(
        ["--prefix", "flag:", "--max-items", "5", "serve"],
        {"MITA_REDIS_MCP_PREFIXES": "env:", "MITA_REDIS_MCP_MAX_ITEMS": "not-a-number"},
    )
    assert result.returncode == 0, result.stderr
    assert "scope: flag:" in result.stderr
    assert "env:" not in result.stderr
