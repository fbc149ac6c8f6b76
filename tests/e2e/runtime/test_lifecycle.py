"""The server lifecycle every service shares, proved on a real process:
health before and after readiness, SIGTERM draining, start-up refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from services.devstack.pki import ensure_local_pki
from services.devstack.stack import free_port
from services.runtime.tls import load_tls, secure_channel

SERVICE = "mamoru.lifecycle.v1.LifecycleService"
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class LifecycleProcess:
    env: dict[str, str]
    tls_dir: Path
    migrations: Path
    grpc_port: int
    health_port: int
    process: asyncio.subprocess.Process | None = None

    async def spawn(self, **overrides: str) -> asyncio.subprocess.Process:
        env = {**self.env, **overrides}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.e2e.runtime.lifecycle_app",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return self.process

    async def health(self) -> int | None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.health_port}") as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.aio.AioRpcError:
                return None
            return int(reply.status)

    async def wait_serving(self) -> None:
        async with asyncio.timeout(60):
            while await self.health() != SERVING:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError(f"the service exited at start:\n{await self.output()}")
                await asyncio.sleep(0.05)

    def channel(self) -> grpc.aio.Channel:
        return secure_channel(
            f"127.0.0.1:{self.grpc_port}",
            load_tls(self.tls_dir, "operator"),
            server_name="lifecycle",
        )

    async def output(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        return (await self.process.stdout.read()).decode()


@pytest.fixture
async def app(
    tmp_path: Path, new_database: Callable[..., Awaitable[str]]
) -> AsyncIterator[LifecycleProcess]:
    tls_dir = tmp_path / "tls"
    ensure_local_pki(tls_dir, ["lifecycle", "operator"])
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_things.sql").write_text("create table thing (id int primary key);\n")
    grpc_port, health_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": await new_database("lifecycle"),
        "MAMORU_TLS_DIR": str(tls_dir),
        "LIFECYCLE_MIGRATIONS": str(migrations),
        "LIFECYCLE_GRPC_PORT": str(grpc_port),
        "LIFECYCLE_HEALTH_PORT": str(health_port),
        "LOG_FORMAT": "json",
    }
    running = LifecycleProcess(env, tls_dir, migrations, grpc_port, health_port)
    yield running
    if running.process is not None and running.process.returncode is None:
        running.process.kill()
        await running.process.wait()


def _unary(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(f"/{SERVICE}/{method}")


async def test_health_says_not_serving_until_migrations_have_run(app: LifecycleProcess) -> None:
    (app.migrations / "0002_slow.sql").write_text("select pg_sleep(2);\n")
    await app.spawn()
    seen: list[int | None] = []
    async with asyncio.timeout(60):
        while not seen or seen[-1] != SERVING:
            seen.append(await app.health())
            await asyncio.sleep(0.05)
    answered = [status for status in seen if status is not None]
    assert answered[0] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert answered[-1] == SERVING


async def test_sigterm_during_a_slow_rpc_lets_it_finish_then_exits_zero(
    app: LifecycleProcess,
) -> None:
    mark = app.migrations.parent / "sleeping"
    process = await app.spawn(LIFECYCLE_SLEEP_MARK=str(mark))
    await app.wait_serving()
    async with app.channel() as channel:
        slow = asyncio.ensure_future(_unary(channel, "Sleep")(b"1.5", timeout=30))
        async with asyncio.timeout(60):
            while True:
                if mark.exists():
                    break
                await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        assert await slow == b"slept"
        with pytest.raises(grpc.aio.AioRpcError):
            await _unary(channel, "Sleep")(b"0", timeout=5)
    async with asyncio.timeout(30):
        assert await process.wait() == 0


async def test_health_turns_not_serving_as_soon_as_sigterm_arrives(app: LifecycleProcess) -> None:
    process = await app.spawn()
    await app.wait_serving()
    async with app.channel() as channel:
        slow = asyncio.ensure_future(_unary(channel, "Sleep")(b"1.5", timeout=30))
        await asyncio.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert await app.health() in (health_pb2.HealthCheckResponse.NOT_SERVING, None)
        await slow
    await process.wait()


async def test_a_migration_changed_after_it_was_applied_stops_startup(
    app: LifecycleProcess,
) -> None:
    process = await app.spawn()
    await app.wait_serving()
    process.send_signal(signal.SIGTERM)
    assert await process.wait() == 0

    (app.migrations / "0001_things.sql").write_text("create table thing (id bigint primary key);\n")
    process = await app.spawn()
    async with asyncio.timeout(60):
        code = await process.wait()
    output = await app.output()
    assert code == 1
    assert "0001_things.sql" in output
    assert "changed" in output


async def test_a_malformed_request_gets_invalid_argument_naming_each_field(
    app: LifecycleProcess,
) -> None:
    await app.spawn()
    await app.wait_serving()
    body = json.dumps({"name": "x" * 11, "account_id": "not-a-uuid"}).encode()
    async with app.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _unary(channel, "EchoName")(body, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(refused.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    fields = {violation.field for violation in bad_request.field_violations}
    assert fields == {"name", "account_id"}


async def test_a_missing_setting_stops_startup_naming_the_variable(app: LifecycleProcess) -> None:
    env = {k: v for k, v in app.env.items() if k != "DATABASE_URL"}
    app.env = env
    process = await app.spawn()
    async with asyncio.timeout(30):
        code = await process.wait()
    assert code == 2
    assert "DATABASE_URL is required" in await app.output()


async def test_a_malformed_setting_stops_startup_naming_the_variable(
    app: LifecycleProcess,
) -> None:
    process = await app.spawn(LIFECYCLE_GRPC_PORT="fifty")
    async with asyncio.timeout(30):
        code = await process.wait()
    assert code == 2
    assert "LIFECYCLE_GRPC_PORT must be an integer" in await app.output()


async def test_a_missing_certificate_stops_startup_naming_the_file(app: LifecycleProcess) -> None:
    (app.tls_dir / "lifecycle-key.pem").unlink()
    process = await app.spawn()
    async with asyncio.timeout(30):
        code = await process.wait()
    assert code == 1
    assert "lifecycle-key.pem" in await app.output()


async def test_health_port_answers_without_tls_while_the_main_port_requires_it(
    app: LifecycleProcess,
) -> None:
    await app.spawn()
    await app.wait_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError):
            await health_pb2_grpc.HealthStub(plain).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
    assert await app.health() == SERVING
    assert app.process is not None
    app.process.send_signal(signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(15):
            await app.process.wait()
