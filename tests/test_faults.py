"""Faults of a real Redis the test controls: slow, full of clients, out of memory, a
replica, loading its dataset; and 200 concurrent calls over one stdio session.

Each fault must give a tool error with a short message safe to show a model (no
traceback, no password, no address), never a crash, and the server must keep
answering. Redis down at start, killed mid-session, paused and NOPERM are in
tests/test_errors.py and tests/test_stdio.py.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from mcp import Client
from mcp.types import CallToolResult
from redis.backoff import NoBackoff
from redis.retry import Retry

from mita_redis_mcp.server import build_server
from tests.conftest import Target, answer_of, app_for, error_text
from tests.servers import ServerProcess, running, start_server
from tests.test_errors import assert_safe
from tests.test_stdio import connect, server_env

pytestmark = pytest.mark.anyio

PASSWORD = "fault-pw-do-not-leak-4711"


def secret_target(server: ServerProcess) -> Target:
    return Target("fault", server.client(), server.url)


def value_of(result: CallToolResult) -> Any:
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    return result.structured_content["value"]["value"]


async def test_slow_redis_times_out_while_the_server_keeps_answering(
    binary: str, redis_server: ServerProcess
) -> None:
    """DEBUG SLEEP holds Redis; the call fails within command_timeout, and meanwhile the
    same session answers calls that need no Redis, and another server's calls too."""
    timeout = 1.0
    with running(binary, "--enable-debug-command", "local", password=PASSWORD) as slow:
        target = secret_target(slow)
        target.raw.set("app:k", "v")
        app = app_for(target, command_timeout=timeout)
        healthy_raw = redis_server.client()
        healthy_raw.set("app:healthy", "ok")
        healthy = app_for(Target("healthy", healthy_raw, redis_server.url))
        sleeper = slow.client()
        probe = redis.Redis(
            host="127.0.0.1",
            port=slow.port,
            password=PASSWORD,
            socket_timeout=0.2,
            # No retry: a retried PING would wait out the sleep and never see it.
            retry=Retry(NoBackoff(), 0),
        )
        probe.ping()
        try:
            async with (
                Client(build_server(app)) as client,
                Client(build_server(healthy)) as other,
            ):
                assert value_of(await client.call_tool("get", {"key": "app:k"})) == "v"
                slow_result: list[CallToolResult] = []
                took: list[float] = []
                answered_meanwhile = 0

                async def slow_call() -> None:
                    started = time.monotonic()
                    slow_result.append(await client.call_tool("get", {"key": "app:k"}))
                    took.append(time.monotonic() - started)

                with anyio.fail_after(30):
                    async with anyio.create_task_group() as group:
                        group.start_soon(
                            anyio.to_thread.run_sync, sleeper.execute_command, "DEBUG", "SLEEP", 4
                        )
                        await _wait_until_busy(probe)
                        group.start_soon(slow_call)
                        while not slow_result:
                            refused = await client.call_tool("check_blacklist", {"token": "x.y"})
                            assert "not a JWT" in error_text(refused)
                            outside = await client.call_tool("get", {"key": "other:k"})
                            assert "outside the allowed prefixes" in error_text(outside)
                            assert value_of(await other.call_tool("get", {"key": "app:healthy"}))
                            answered_meanwhile += 1
        finally:
            sleeper.close()
            probe.close()
            healthy_raw.delete("app:healthy")
            healthy_raw.close()
            target.raw.close()

    message = error_text(slow_result[0])
    assert "Redis did not answer" in message
    assert f"within {timeout:g} s" in message
    assert_safe(message, PASSWORD, slow.url, str(slow.port))
    assert took[0] < timeout + 5
    # While the slow call waited, the server answered others: it never blocked.
    assert answered_meanwhile >= 3


async def _wait_until_busy(probe: redis.Redis) -> None:
    """Until a PING goes unanswered: DEBUG SLEEP has started."""
    while True:
        try:
            await anyio.to_thread.run_sync(probe.ping)
        except (redis.TimeoutError, redis.ConnectionError):
            return
        await anyio.sleep(0.01)


async def test_connection_limit_reached_is_a_clear_error(binary: str) -> None:
    with running(binary, "--maxclients", "1", password=PASSWORD) as full:
        holder = full.client()
        holder.set("app:k", "v")  # this connection holds the only slot
        app = app_for(secret_target(full))
        try:
            async with Client(build_server(app)) as client:
                refused = await client.call_tool("get", {"key": "app:k"})
                message = error_text(refused)
                assert "maxclients" in message
                assert_safe(message, PASSWORD, full.url, str(full.port))
                holder.close()
                # The slot is free again: the same session works, no restart.
                # Polling another process's state: there is no event to wait on.
                with anyio.fail_after(15):
                    while (again := await client.call_tool("get", {"key": "app:k"})).is_error:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                assert value_of(again) == "v"
        finally:
            holder.close()


async def test_out_of_memory_refuses_set_with_oom(binary: str) -> None:
    with running(
        binary, "--maxmemory", "1mb", "--maxmemory-policy", "noeviction", password=PASSWORD
    ) as small:
        raw = small.client()
        raw.set("app:k", "v")
        fill_until_oom(raw)
        app = app_for(secret_target(small), allow_writes=True)
        try:
            async with Client(build_server(app)) as client:
                refused = await client.call_tool("set", {"key": "app:new", "value": "v"})
                still_read = await client.call_tool("get", {"key": "app:k"})
        finally:
            raw.close()
    message = error_text(refused)
    assert "OOM" in message
    assert "Redis refused SET" in message
    assert_safe(message, PASSWORD, small.url, str(small.port))
    assert value_of(still_read) == "v"


def fill_until_oom(raw: redis.Redis) -> None:
    for i in range(10_000):
        try:
            raw.set(f"fill:{i}", os.urandom(10_000))
        except redis.exceptions.OutOfMemoryError:
            return
    pytest.fail("maxmemory 1mb never refused a write")


@pytest.fixture
def primary_and_replica(binary: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    primary = start_server(binary, password=PASSWORD)
    try:
        replica = start_server(
            binary,
            "--replicaof",
            "127.0.0.1",
            str(primary.port),
            "--masterauth",
            PASSWORD,
            password=PASSWORD,
        )
        try:
            yield primary, replica
        finally:
            replica.stop()
    finally:
        primary.stop()


async def test_replica_refuses_set_with_readonly(
    primary_and_replica: tuple[ServerProcess, ServerProcess],
) -> None:
    primary, replica = primary_and_replica
    with primary.client() as raw:
        raw.set("app:k", "from-primary")
    with replica.client() as replica_raw, anyio.fail_after(20):
        # Replication: no event to wait on.
        while replica_raw.get("app:k") != b"from-primary":  # noqa: ASYNC110
            await anyio.sleep(0.05)
    app = app_for(secret_target(replica), allow_writes=True)
    try:
        async with Client(build_server(app)) as client:
            refused = await client.call_tool("set", {"key": "app:k", "value": "changed"})
            read = await client.call_tool("get", {"key": "app:k"})
    finally:
        await app.backend.close()
    message = error_text(refused)
    assert "READONLY" in message
    assert_safe(message, PASSWORD, replica.url, str(replica.port), str(primary.port))
    assert value_of(read) == "from-primary"
    with primary.client() as raw:
        assert raw.get("app:k") == b"from-primary"


async def test_loading_dataset_is_a_clear_error_then_answers(binary: str) -> None:
    """A real LOADING: a restart over an RDB that Redis loads slowly (key-load-delay, a
    testing knob of redis-server) while it answers clients between chunks."""
    directory = tempfile.mkdtemp(prefix="mita-redis-mcp-rdb-")
    try:
        with (
            running(binary, "--dir", directory, password=PASSWORD) as first,
            first.client() as raw,
        ):
            # Random values: the RDB cannot compress them, so loading is many chunks.
            raw.mset({f"app:k:{i}": os.urandom(1000) for i in range(500)})
            raw.set("app:k", "loaded")
            raw.save()
        assert (Path(directory) / "dump.rdb").is_file()
        loading = start_server(
            binary,
            "--dir",
            directory,
            "--key-load-delay",
            "10000",
            "--loading-process-events-interval-bytes",
            "1024",
            password=PASSWORD,
        )
        try:
            app = app_for(secret_target(loading), command_timeout=2)
            async with Client(build_server(app)) as client:
                refused = await client.call_tool("get", {"key": "app:k"})
                with anyio.fail_after(60):
                    while (after := await client.call_tool("get", {"key": "app:k"})).is_error:
                        assert "loading" in error_text(after)
                        await anyio.sleep(0.1)
        finally:
            loading.stop()
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)
    message = error_text(refused)
    assert "Redis is loading its dataset" in message
    assert_safe(message, PASSWORD, loading.url, str(loading.port))
    assert value_of(after) == "loaded"


async def test_200_concurrent_calls_over_one_stdio_session(
    redis_server: ServerProcess, tmp_path: Path
) -> None:
    with redis_server.client() as raw:
        raw.flushall()
        for i in range(200):
            if i % 2:
                raw.hset(f"app:c:{i}", mapping={"n": str(i), "kind": "hash"})
            else:
                raw.set(f"app:c:{i}", f"value-{i}")
        raw.set("other:secret", "not for the model")
    answers: dict[int, dict[str, Any]] = {}

    async def call(client: Client, i: int) -> None:
        answers[i] = answer_of(await client.call_tool("get", {"key": f"app:c:{i}"}))

    with anyio.fail_after(120):
        async with (
            connect(server_env(redis_server.url), tmp_path / "stderr") as client,
            anyio.create_task_group() as group,
        ):
            for i in range(200):
                group.start_soon(call, client, i)

    assert len(answers) == 200
    with redis_server.client() as raw:
        for i, answer in answers.items():
            key = f"app:c:{i}"
            assert answer["key"] == key
            if i % 2:
                fields = {f["field"]["value"]: f["value"]["value"] for f in answer["fields"]}
                stored = {k.decode(): v.decode() for k, v in raw.hgetall(key).items()}
                assert fields == stored
            else:
                stored_value = raw.get(key)
                assert stored_value is not None
                assert answer["value"]["value"] == stored_value.decode()
