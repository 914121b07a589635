"""redis+sentinel:// against real Sentinels: the primary is found through them, followed
through a failover, and every failure is a clear sentence without an address or a
password.

The read-only tests share one setup (a primary, its replica, two Sentinels, passwords on
both). Each failover test starts a setup of its own, so that none depends on the order
the tests run in.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.types import CallToolResult

from mita_redis_mcp import backend as backend_module
from mita_redis_mcp.app import App
from mita_redis_mcp.backend import Backend, Command, set_command
from mita_redis_mcp.config import DEFAULT_SENTINEL_PORT, Settings, sentinel_target
from mita_redis_mcp.errors import ConfigError
from tests.conftest import Answer, answer_of, call_tool, error_text, installed
from tests.servers import (
    SentinelSetup,
    free_port,
    redis_binary,
    start_sentinel,
    start_sentinel_setup,
    wait_until,
)
from tests.test_doctor import doctor, verdicts
from tests.test_stdio import connect, server_env

pytestmark = pytest.mark.anyio

PASSWORD = "primary-Pa55w0rd-do-not-leak"
SENTINEL_PASSWORD = "sentinel-Pa55w0rd-do-not-leak"
JTI = "5f2b8c1e-9d4a-4e7b-8c3f-1a2b3c4d5e6f"


@pytest.fixture(scope="module")
def setup() -> Iterator[SentinelSetup]:
    """A primary, its replica and two Sentinels, with passwords: shared, never failed over."""
    started = start_sentinel_setup(
        installed(redis_binary()), 2, password=PASSWORD, sentinel_password=SENTINEL_PASSWORD
    )
    with started.primary().client() as raw:
        raw.flushall()
        raw.set("app:greeting", "hello through Sentinel")
        raw.hset("app:profile", mapping={"plan": "pro"})
        raw.set(f"mita:blacklist:token:{JTI}", "user_revocation", ex=3600)
    yield started
    started.stop()


@pytest.fixture
def own_setup(request: pytest.FixtureRequest) -> Iterator[SentinelSetup]:
    """A setup of the test's own, to fail over (``sentinels`` from the test's parameter)."""
    sentinels = getattr(request, "param", 1)
    started = start_sentinel_setup(
        installed(redis_binary()), sentinels, password=PASSWORD, sentinel_password=SENTINEL_PASSWORD
    )
    yield started
    started.stop()


MakeApp = Callable[..., App]


@pytest.fixture
async def make() -> AsyncIterator[MakeApp]:
    """Apps built as the CLI builds them (``Settings.load``); closed afterwards."""
    made: list[App] = []

    def build(url: str, **flags: Any) -> App:
        settings = Settings.load(
            {"redis_url": url, "prefixes": ["app:", "mita:"], **flags}, environ={}
        )
        app = App.from_settings(settings)
        made.append(app)
        return app

    yield build
    for app in made:
        await app.backend.close()


def assert_safe(text: str, *ports: int) -> None:
    """Nothing of the connection details: no password, no address, no port."""
    for secret in (PASSWORD, SENTINEL_PASSWORD, "127.0.0.1", *map(str, ports)):
        assert secret not in text


async def eventually(
    call: Callable[[], Awaitable[CallToolResult]],
    done: Callable[[Answer], bool] = lambda _: True,
) -> tuple[Answer, float, list[str]]:
    """Call until an answer satisfies ``done``: that answer, the seconds it took, and the
    errors met on the way."""
    start = time.monotonic()
    errors: list[str] = []
    with anyio.fail_after(30):
        while True:
            result = await call()
            if result.is_error:
                errors.append(error_text(result))
            elif done(answer := answer_of(result)):
                return answer, time.monotonic() - start, errors
            await anyio.sleep(0.05)


def run_id(setup: SentinelSetup) -> str:
    with setup.primary().client() as raw:
        return str(raw.info("server")["run_id"])


# -- configuration -----------------------------------------------------------------------


def test_sentinel_url_names_the_sentinels_the_primary_and_both_credentials() -> None:
    target = sentinel_target(
        "rediss+sentinel://app:p%40ss@s1:26380,[::1],s3/my%20master/2"
        "?sentinel_username=watch&sentinel_password=sp"
    )
    assert target.sentinels == (("s1", 26380), ("::1", DEFAULT_SENTINEL_PORT), ("s3", 26379))
    assert (target.master, target.db, target.tls) == ("my master", 2, True)
    assert target.username == "app"
    assert target.password is not None
    assert target.password.get_secret_value() == "p@ss"
    assert target.sentinel_username == "watch"
    assert target.sentinel_password is not None
    assert target.sentinel_password.get_secret_value() == "sp"
    assert PASSWORD not in repr(sentinel_target(f"redis+sentinel://:{PASSWORD}@s1/m"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("redis+sentinel://s1:26379", "names the primary after", id="no-master"),
        pytest.param("redis+sentinel:///mymaster", "address 1 has no host", id="no-host"),
        pytest.param("redis+sentinel://s1,:26379/m", "address 2 has no host", id="empty-host"),
        pytest.param("redis+sentinel://s1:0/m", "address 1 has a bad port", id="port-0"),
        pytest.param("redis+sentinel://s1:263x9/m", "address 1 has a bad port", id="bad-port"),
        pytest.param("redis+sentinel://[::1/m", "address 1 is malformed", id="bad-ipv6"),
        pytest.param("redis+sentinel://s1/m/zero", "must be a number", id="bad-db"),
        pytest.param(
            f"redis+sentinel://s1/m?sentinel_password=a&{PASSWORD}",
            "takes only the parameters",
            id="unencoded-ampersand-in-password",
        ),
        pytest.param(
            f"redis+sentinel://:pa/{PASSWORD}@s1/m",
            "percent-encode any / ? # @ in a password",
            id="unencoded-slash-in-password",
        ),
    ],
)
def test_bad_sentinel_url_is_one_line_that_quotes_no_secret(url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load({"redis_url": url, "prefixes": ["app:"]}, environ={})
    (problem,) = caught.value.problems
    assert problem.startswith("--redis-url")
    assert expected in problem
    assert PASSWORD not in problem


def test_tls_options_apply_to_a_rediss_sentinel_url(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN PLACEHOLDER-----\n")
    tls = {"prefixes": ["app:"], "tls_ca_file": str(ca)}
    Settings.load({"redis_url": "rediss+sentinel://s1/m", **tls}, environ={})
    with pytest.raises(ConfigError, match="not a rediss:// URL"):
        Settings.load({"redis_url": "redis+sentinel://s1/m", **tls}, environ={})


def test_safe_url_masks_both_passwords() -> None:
    settings = Settings.load(
        {
            "redis_url": f"redis+sentinel://:{PASSWORD}@s1,s2/m?sentinel_password={SENTINEL_PASSWORD}",
            "prefixes": ["app:"],
        },
        environ={},
    )
    assert settings.safe_url == "redis+sentinel://:***@s1,s2/m?sentinel_password=***"


# -- the tools, through the Sentinels ----------------------------------------------------


async def test_tools_answer_from_the_primary_the_sentinels_name(
    setup: SentinelSetup, make: MakeApp
) -> None:
    app = make(setup.url())
    got = answer_of(await call_tool(app, "get", {"key": "app:greeting"}))
    listed = answer_of(await call_tool(app, "keys", {"pattern": "app:*"}))
    info = answer_of(await call_tool(app, "info", {"section": "replication"}))
    revoked = answer_of(await call_tool(app, "check_blacklist", {"jti": JTI}))

    assert got["value"]["value"] == "hello through Sentinel"
    assert sorted(entry["key"] for entry in listed["keys"]) == ["app:greeting", "app:profile"]
    assert info["sections"]["replication"]["role"] == "master"
    assert info["sections"]["replication"]["connected_slaves"] == 1
    assert revoked["blacklisted"] is True


async def test_one_sentinel_down_the_other_still_finds_the_primary(
    setup: SentinelSetup, make: MakeApp
) -> None:
    dead = free_port()
    alive = ",".join(f"127.0.0.1:{s.port}" for s in setup.sentinels)
    url = setup.url().replace(alive, f"127.0.0.1:{dead},{alive}")
    got = answer_of(await call_tool(make(url), "get", {"key": "app:greeting"}))
    assert got["value"]["value"] == "hello through Sentinel"


async def test_wrong_master_name_is_a_clear_error_naming_it(
    setup: SentinelSetup, make: MakeApp
) -> None:
    text = error_text(await call_tool(make(setup.url(master="nosuch")), "get", {"key": "app:x"}))
    assert "none names a healthy primary 'nosuch'" in text
    assert "they monitor no such name" in text
    assert_safe(text, *(s.port for s in setup.sentinels))


async def test_wrong_sentinel_password_is_a_clear_error(
    setup: SentinelSetup, make: MakeApp
) -> None:
    url = setup.url().replace(SENTINEL_PASSWORD, "not-the-sentinel-password")
    text = error_text(await call_tool(make(url), "get", {"key": "app:greeting"}))
    assert "a Sentinel refused the credentials" in text
    assert "not-the-sentinel-password" not in text
    assert_safe(text, *(s.port for s in setup.sentinels))


async def test_server_started_with_sentinels_down_answers_once_they_are_up(
    setup: SentinelSetup, make: MakeApp
) -> None:
    port = free_port()
    url = (
        f"redis+sentinel://:{PASSWORD}@127.0.0.1:{port}/latecomer/0"
        f"?sentinel_password={SENTINEL_PASSWORD}"
    )
    app = make(url)
    text = error_text(await call_tool(app, "get", {"key": "app:greeting"}))
    assert "no primary 'latecomer' found" in text
    assert "could not be reached" in text
    assert_safe(text, port)

    # A Sentinel of another name, so that the shared ones never count it among theirs.
    late = start_sentinel(
        installed(redis_binary()),
        setup.primary().port,
        master="latecomer",
        auth_pass=PASSWORD,
        password=SENTINEL_PASSWORD,
        port=port,
    )
    try:
        got, _, _ = await eventually(lambda: call_tool(app, "get", {"key": "app:greeting"}))
    finally:
        late.stop()
    assert got["value"]["value"] == "hello through Sentinel"


async def test_stdio_server_reads_through_sentinels_and_logs_no_password(
    setup: SentinelSetup, tmp_path: Path
) -> None:
    stderr = tmp_path / "stderr"
    with anyio.fail_after(30):
        async with connect(server_env(setup.url()), stderr) as client:
            got = answer_of(await client.call_tool("get", {"key": "app:greeting"}))
            wrong = await client.call_tool("keys", {"pattern": "other:*"})
    assert got["value"]["value"] == "hello through Sentinel"
    assert wrong.is_error
    log = stderr.read_text()
    assert "redis+sentinel://:***@127.0.0.1:" in log
    assert "sentinel_password=***" in log
    assert PASSWORD not in log
    assert SENTINEL_PASSWORD not in log


# -- doctor ------------------------------------------------------------------------------


def test_doctor_reports_the_primary_discovered_through_the_sentinels(
    setup: SentinelSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = doctor(capsys, setup.url())
    checks = verdicts(out)
    assert checks["sentinel"] == (
        "OK",
        "sentinel-managed: primary mymaster discovered through 2 of 2 Sentinel(s)",
    )
    assert checks["mode"][0] == "OK"
    assert checks["mode"][1].startswith("standalone, master")
    assert code == 0, out + err
    assert PASSWORD not in out + err
    assert SENTINEL_PASSWORD not in out + err


def test_doctor_lists_the_monitored_names_when_the_master_name_is_wrong(
    setup: SentinelSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = doctor(capsys, setup.url(master="mymastr"))
    assert code == 1
    status, detail = verdicts(out)["sentinel"]
    assert status == "FAIL"
    assert "no Sentinel monitors a primary named 'mymastr' (they monitor: mymaster)" in detail


def test_doctor_says_when_no_sentinel_answers(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = doctor(capsys, f"redis+sentinel://127.0.0.1:{free_port()}/mymaster")
    assert code == 1
    assert verdicts(out)["sentinel"] == (
        "FAIL",
        "none of the 1 Sentinel(s) answered (connection refused)",
    )


# -- failover ----------------------------------------------------------------------------


@pytest.mark.parametrize("own_setup", [2], indirect=True)
async def test_primary_killed_mid_session_calls_fail_cleanly_then_follow_the_promoted_replica(
    own_setup: SentinelSetup, make: MakeApp
) -> None:
    app = make(own_setup.url(), allow_writes=True)
    answer_of(await call_tool(app, "set", {"key": "app:before", "value": "written before"}))
    old = own_setup.primary()
    with old.client() as raw:
        assert raw.wait(1, 5000) == 1  # the replica has it

    old.process.kill()
    old.process.wait()
    got, seconds, errors = await eventually(lambda: call_tool(app, "get", {"key": "app:before"}))
    new = own_setup.primary()
    print(f"primary killed: the tools answered again after {seconds:.2f} s")

    assert new.port != old.port
    assert got["value"]["value"] == "written before"
    assert errors, "the Sentinels cannot have promoted a replica within down-after (1 s)"
    for text in errors:
        assert any(
            sentence in text
            for sentence in (
                "cannot reach Redis: connection refused",
                "none names a healthy primary 'mymaster': it is down and not yet replaced",
            )
        ), text
        assert_safe(text, old.port, new.port)
    answer_of(await call_tool(app, "set", {"key": "app:after", "value": "written after"}))
    with new.client() as raw:
        assert raw.get("app:after") == b"written after"


async def test_planned_failover_the_next_calls_read_and_write_on_the_new_primary(
    own_setup: SentinelSetup, make: MakeApp
) -> None:
    app = make(own_setup.url(), allow_writes=True)
    answer_of(await call_tool(app, "set", {"key": "app:before", "value": "written before"}))
    old = own_setup.primary()
    with old.client() as raw:
        assert raw.wait(1, 5000) == 1

    start = time.monotonic()
    with own_setup.sentinels[0].client() as sentinel:
        assert sentinel.execute_command("SENTINEL", "FAILOVER", own_setup.master)
    wait_until(lambda: own_setup.primary_port() not in (None, old.port), "the switch")
    switched = time.monotonic() - start
    new_id = run_id(own_setup)
    # The old primary stays writable until the Sentinel demotes it, seconds later: the
    # server must leave it as soon as the Sentinels name the new one.
    _, seconds, _ = await eventually(
        lambda: call_tool(app, "info", {"section": "server"}),
        lambda answer: answer["sections"]["server"]["run_id"] == new_id,
    )
    print(f"planned failover: switched after {switched:.2f} s, followed {seconds:.2f} s later")

    got = answer_of(await call_tool(app, "get", {"key": "app:before"}))
    assert got["value"]["value"] == "written before"
    answer_of(await call_tool(app, "set", {"key": "app:after", "value": "written after"}))
    with own_setup.primary().client() as raw:
        assert raw.get("app:after") == b"written after"


async def test_open_connections_leave_the_old_primary_as_soon_as_the_sentinels_switch(
    own_setup: SentinelSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Asked at every command here (1 s apart by default), so that the proof is not a race.
    monkeypatch.setattr(backend_module, "SENTINEL_RECHECK_SECONDS", 0.0)
    settings = Settings.load({"redis_url": own_setup.url(), "prefixes": ["app:"]}, environ={})
    backend = Backend.from_settings(settings)
    try:
        await backend.ping()  # a pooled connection to the old primary
        old = own_setup.primary()
        with own_setup.sentinels[0].client() as sentinel:
            assert sentinel.execute_command("SENTINEL", "FAILOVER", own_setup.master)
        wait_until(lambda: own_setup.primary_port() not in (None, old.port), "the switch")

        async def write() -> list[Command]:
            return [set_command(b"app:after", b"new", px=None, keep_ttl=False, nx=False, xx=False)]

        # As the set tool writes: WATCH, then MULTI/SET/EXEC, on a pooled connection.
        assert await backend.write_unless_changed([b"app:after"], write) is not None
    finally:
        await backend.close()
    with own_setup.primary().client() as raw:
        assert raw.get("app:after") == b"new"
    # Sentinel demotes the old primary seconds after the switch: until then it takes
    # writes, and the write would have been lost there.
    assert own_setup.role(old) == "master"
    with old.client() as raw:
        assert raw.get("app:after") is None
