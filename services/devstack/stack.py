"""Start the whole system locally: PostgreSQL, a local CA, an SMTP server that
keeps what it receives, the sandbox card processor and loyalty program, and the
four services as separate processes.

`make run` uses it through ``python -m services.devstack``; end-to-end tests,
the incident drill and the benchmarks use ``LocalStack`` directly with free ports.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.devstack import devdb
from services.devstack.card_processor import SandboxProcessor
from services.devstack.pgbouncer import LocalPgBouncer
from services.devstack.pgbouncer import wanted as pgbouncer_wanted
from services.devstack.pki import ensure_local_pki
from services.devstack.points_program import SandboxPointsProgram
from services.devstack.smtp import LocalSmtpServer

SERVICES = ("identity", "risk", "notify", "wallet")
CLIENT_PRINCIPALS = ("operator", "gateway", "pos")
DEFAULT_PORTS = {
    "identity": (50051, 50061),
    "wallet": (50052, 50062),
    "risk": (50053, 50063),
    "notify": (50054, 50064),
}
DEFAULT_METRICS_PORTS = {
    "identity": 9461,
    "wallet": 9462,
    "risk": 9463,
    "notify": 9464,
    "gateway": 9465,
}
# Replica n (from 1) of `make run REPLICAS=n` listens on the default ports plus this
# times n - 1 (the metrics port plus a tenth of it).
REPLICA_PORT_STEP = 100
DEFAULT_SMTP_PORT = 2525
DEFAULT_CARD_PROCESSOR_PORT = 8089
DEFAULT_POINTS_PROGRAM_PORT = 8090


# Secrets each service needs; `make run` generates them once into var/secrets.env
# and tests generate fresh ones. Production takes them from its secret store.
LOCAL_SECRETS = ("IDENTITY_SECRETS_KEY", "IDENTITY_PSEUDONYM_KEY")


def random_secrets() -> dict[str, str]:
    return {name: base64.b64encode(secrets.token_bytes(32)).decode() for name in LOCAL_SECRETS}


def local_secrets(var_dir: Path) -> dict[str, str]:
    """The local stack's secrets, made once and kept so data stays readable across runs."""
    path = var_dir / "secrets.env"
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, value = line.partition("=")
            known[name] = value
    missing = {k: v for k, v in random_secrets().items() if k not in known}
    if missing:
        known.update(missing)
        path.write_text("".join(f"{k}={v}\n" for k, v in known.items()))
        path.chmod(0o600)
    return known


def configured_port(variable: str, default: int) -> int:
    """A `make run` port: the environment's value when set, else the documented default."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SystemExit(f"{variable} must be a port number (1-65535), got {text!r}")
    return int(text)


def fixed_service_ports(name: str) -> tuple[int, int]:
    """gRPC and health ports of ``name`` under `make run` (<SERVICE>_GRPC_PORT, _HEALTH_PORT)."""
    grpc_port, health_port = DEFAULT_PORTS[name]
    prefix = name.upper()
    return (
        configured_port(f"{prefix}_GRPC_PORT", grpc_port),
        configured_port(f"{prefix}_HEALTH_PORT", health_port),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    name: str
    grpc_port: int
    health_port: int
    process: asyncio.subprocess.Process | None = None
    metrics_port: int = 0
    replica: int = 1
    # What this process reads beyond the stack's shared environment, on every start.
    env: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def key(self) -> str:
        """Its name in ``LocalStack.processes``: ``wallet``, then ``wallet-2``..."""
        return self.name if self.replica == 1 else f"{self.name}-{self.replica}"


@dataclass
class LocalStack:
    """Everything `make run` starts. ``fixed_ports`` uses the documented defaults."""

    var_dir: Path
    fixed_ports: bool = False
    services: tuple[str, ...] = SERVICES
    extra_env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    smtp: LocalSmtpServer | None = None
    card_processor: SandboxProcessor | None = None
    points_program: SandboxPointsProgram | None = None
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    server_url: str = ""
    # Processes per service, against the same databases; clients spread calls over them.
    replicas: int = 1
    # Services reach their databases through PgBouncer in transaction mode.
    pgbouncer: bool = field(default_factory=pgbouncer_wanted)
    bouncer: LocalPgBouncer | None = None

    @property
    def tls_dir(self) -> Path:
        return self.var_dir / "tls"

    async def start(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        ensure_local_pki(self.tls_dir, [*SERVICES, *CLIENT_PRINCIPALS])
        self.server_url = await asyncio.to_thread(devdb.server_url, self.var_dir / "postgres")
        if self.pgbouncer and self.bouncer is None:
            self.bouncer = LocalPgBouncer(self.server_url, self.var_dir / "pgbouncer")
            await self.bouncer.start()
        smtp_port = configured_port("SMTP_PORT", DEFAULT_SMTP_PORT) if self.fixed_ports else 0
        self.smtp = LocalSmtpServer(port=smtp_port, maildir=self.var_dir / "mail")
        await self.smtp.start()
        self.card_processor = SandboxProcessor(
            port=configured_port("WALLET_SANDBOX_PROCESSOR_PORT", DEFAULT_CARD_PROCESSOR_PORT)
            if self.fixed_ports
            else 0
        )
        await self.card_processor.start()
        self.points_program = SandboxPointsProgram(
            port=configured_port("WALLET_SANDBOX_POINTS_PORT", DEFAULT_POINTS_PROGRAM_PORT)
            if self.fixed_ports
            else 0
        )
        await self.points_program.start()
        for name in SERVICES:
            for replica in range(1, self.replicas + 1):
                proc = self.plan(name, replica)
                self.processes[proc.key] = proc
        env = await self._environment()
        started = [proc for proc in self.processes.values() if proc.name in self.services]
        for proc in started:
            await self._spawn(proc, env)
        await asyncio.gather(*(self.wait_serving(proc.key) for proc in started))

    def plan(self, name: str, replica: int) -> ServiceProcess:
        """Replica ``replica`` (from 1) of ``name``, on its ports, not yet started."""
        if self.fixed_ports:
            step = REPLICA_PORT_STEP * (replica - 1)
            grpc_port, health_port = (port + step for port in fixed_service_ports(name))
            metrics_port = (
                configured_port(f"{name.upper()}_METRICS_PORT", DEFAULT_METRICS_PORTS[name])
                + step // 10
            )
        else:
            grpc_port, health_port, metrics_port = free_port(), free_port(), free_port()
        return ServiceProcess(
            name, grpc_port, health_port, metrics_port=metrics_port, replica=replica
        )

    def replicas_of(self, name: str) -> list[ServiceProcess]:
        return [proc for proc in self.processes.values() if proc.name == name]

    def address_of(self, name: str) -> str:
        """The service's gRPC target: its one address, or the list of its replicas'."""
        return ",".join(proc.address for proc in self.replicas_of(name))

    async def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("LOG_FORMAT", "json")
        env["MAMORU_TLS_DIR"] = str(self.tls_dir)
        env.update(local_secrets(self.var_dir))
        assert self.smtp is not None
        env["SMTP_HOST"] = "127.0.0.1"
        env["SMTP_PORT"] = str(self.smtp.port)
        assert self.card_processor is not None
        env["WALLET_PROCESSOR_URL"] = self.card_processor.url
        assert self.points_program is not None
        env["WALLET_POINTS_URL"] = self.points_program.url
        for proc in self.processes.values():
            prefix = proc.name.upper()
            env[f"{prefix}_ADDRESS"] = self.address_of(proc.name)
            if proc.replica == 1:
                env[f"{prefix}_GRPC_PORT"] = str(proc.grpc_port)
                env[f"{prefix}_HEALTH_PORT"] = str(proc.health_port)
                env[f"{prefix}_METRICS_PORT"] = str(proc.metrics_port)
        env.update(self.extra_env)
        return env

    async def _spawn(self, proc: ServiceProcess, base_env: dict[str, str]) -> None:
        env = {**base_env, **proc.env}
        prefix = proc.name.upper()
        env[f"{prefix}_GRPC_PORT"] = str(proc.grpc_port)
        env[f"{prefix}_HEALTH_PORT"] = str(proc.health_port)
        env[f"{prefix}_METRICS_PORT"] = str(proc.metrics_port)
        direct = await devdb.ensure_database(self.server_url, f"mamoru_{proc.name}")
        env["DATABASE_URL"] = direct
        if self.bouncer is not None:
            env["DATABASE_URL"] = self.bouncer.url(direct)
            env["DATABASE_DIRECT_URL"] = direct
        stdout: int | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_file = (self.log_dir / f"{proc.key}.log").open("ab")
            stdout = log_file.fileno()
        proc.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{proc.name}",
            env=env,
            stdout=stdout,
            stderr=asyncio.subprocess.STDOUT if stdout is not None else None,
        )

    async def wait_serving(self, name: str, within: float = 60.0) -> None:
        """Poll the plaintext health port until the service says SERVING."""
        proc = self.processes[name]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{proc.health_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            async with asyncio.timeout(within):
                while True:
                    if proc.process is not None and proc.process.returncode is not None:
                        raise RuntimeError(
                            f"{name} exited with code {proc.process.returncode} during start-up"
                        )
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            return
                    await asyncio.sleep(0.1)

    async def stop_service(self, name: str, within: float = 15.0) -> int | None:
        """SIGTERM one service and wait for it; returns its exit code."""
        process = self.processes[name].process
        if process is None or process.returncode is not None:
            return process.returncode if process is not None else None
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within):
                return await process.wait()
        except TimeoutError:
            process.kill()
            return await process.wait()

    async def restart_service(self, name: str) -> None:
        await self.stop_service(name)
        await self._spawn(self.processes[name], await self._environment())
        await self.wait_serving(name)

    async def stop(self) -> None:
        await asyncio.gather(*(self.stop_service(name) for name in self.processes))
        if self.smtp is not None:
            await self.smtp.stop()
        if self.card_processor is not None:
            await self.card_processor.stop()
        if self.points_program is not None:
            await self.points_program.stop()
        if self.bouncer is not None:
            await self.bouncer.stop()
            self.bouncer = None
        if "DATABASE_URL" not in os.environ:
            await asyncio.to_thread(devdb.stop_embedded, self.var_dir / "postgres")

    async def __aenter__(self) -> LocalStack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
