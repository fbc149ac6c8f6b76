"""Real services for tests: each started in this process on free ports, with
its own fresh database, mutual TLS from a throwaway CA, the local SMTP server,
the sandbox card processor and the sandbox loyalty program. Nothing of ours is
mocked; tests talk gRPC to them like any caller.

    cluster = Cluster(tmp_path, new_database)
    await cluster.start("risk", "identity")
    identity = cluster.stub("identity", as_="gateway")
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from services.devstack.card_processor import SandboxProcessor
from services.devstack.pgbouncer import LocalPgBouncer
from services.devstack.pki import ensure_local_pki
from services.devstack.points_program import SandboxPointsProgram
from services.devstack.smtp import LocalSmtpServer
from services.devstack.stack import CERTIFICATES, SERVICES, free_port, random_secrets
from services.runtime.config import load_settings
from services.runtime.server import RunningService, start_service
from services.runtime.tls import load_tls, secure_channel

_STUBS = {
    "identity": ("mamoru.identity.v1.identity_pb2_grpc", "IdentityServiceStub"),
    "wallet": ("mamoru.wallet.v1.wallet_pb2_grpc", "WalletServiceStub"),
    "risk": ("mamoru.risk.v1.risk_pb2_grpc", "RiskServiceStub"),
    "notify": ("mamoru.notify.v1.notify_pb2_grpc", "NotifyServiceStub"),
}


class Cluster:
    """Some or all of the four services, started in-process, plus SMTP."""

    def __init__(
        self,
        folder: Path,
        new_database: Callable[..., Awaitable[str]],
        env: Mapping[str, str] | None = None,
        pooler: LocalPgBouncer | None = None,
    ) -> None:
        self.folder = folder
        self.pooler = pooler
        self.tls_dir = folder / "tls"
        self.new_database = new_database
        self.env = {**random_secrets(), **(env or {})}
        self.ports = {name: (free_port(), free_port()) for name in SERVICES}
        self.smtp = LocalSmtpServer()
        self.card_processor = SandboxProcessor()
        self.points_program = SandboxPointsProgram()
        self.running: dict[str, RunningService] = {}
        self.replicas: list[RunningService] = []
        self.database_urls: dict[str, str] = {}
        self._channels: list[grpc.aio.Channel] = []
        self._smtp_started = False

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name][0]}"

    def metrics_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.running[name].metrics_port}/metrics"

    async def _environment(self, name: str, overrides: Mapping[str, str]) -> dict[str, str]:
        if not self._smtp_started:
            ensure_local_pki(self.tls_dir, CERTIFICATES)
            await self.smtp.start()
            await self.card_processor.start()
            await self.points_program.start()
            self._smtp_started = True
        if name not in self.database_urls:
            self.database_urls[name] = await self.new_database(name)
        direct = self.database_urls[name]
        env = {
            "DATABASE_URL": direct if self.pooler is None else self.pooler.url(direct),
            "MAMORU_TLS_DIR": str(self.tls_dir),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "warning",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp.port),
            "WALLET_PROCESSOR_URL": self.card_processor.url,
            "WALLET_POINTS_URL": self.points_program.url,
            # Tests wait for risk's answer however busy the machine: a sign-in or a
            # payment falls back only in the tests that make risk late on purpose.
            "IDENTITY_RISK_TIMEOUT_SECONDS": "30",
            "WALLET_RISK_TIMEOUT_SECONDS": "30",
        }
        for peer, (grpc_port, health_port) in self.ports.items():
            env[f"{peer.upper()}_ADDRESS"] = f"127.0.0.1:{grpc_port}"
            env[f"{peer.upper()}_GRPC_PORT"] = str(grpc_port)
            env[f"{peer.upper()}_HEALTH_PORT"] = str(health_port)
            env[f"{peer.upper()}_METRICS_PORT"] = "0"
        # Services beyond the four (the gateway) too: tests never take a fixed metrics port.
        env[f"{name.upper()}_METRICS_PORT"] = "0"
        if self.pooler is not None:
            env["DATABASE_DIRECT_URL"] = direct
        env.update(self.env)
        env.update(overrides)
        return env

    async def start(self, *names: str, env: Mapping[str, str] | None = None) -> None:
        """Start the named services (in order); ``env`` overrides their settings."""
        for name in names:
            bootstrap = importlib.import_module(f"services.{name}.bootstrap")
            settings_module = importlib.import_module(f"services.{name}.settings")
            settings_cls = getattr(settings_module, f"{name.capitalize()}Settings")
            settings = load_settings(settings_cls, await self._environment(name, env or {}))
            self.running[name] = await start_service(
                name, settings, bootstrap.MIGRATIONS, bootstrap.build
            )

    async def start_replica(
        self, name: str, env: Mapping[str, str] | None = None
    ) -> tuple[RunningService, Any]:
        """One more replica of a started service: its own ports, the same database.
        Returns it and a factory of stubs to it: ``stub(as_="pos")``."""
        own_ports = {
            f"{name.upper()}_GRPC_PORT": str(free_port()),
            f"{name.upper()}_HEALTH_PORT": str(free_port()),
        }
        bootstrap = importlib.import_module(f"services.{name}.bootstrap")
        settings_module = importlib.import_module(f"services.{name}.settings")
        settings_cls = getattr(settings_module, f"{name.capitalize()}Settings")
        environment = await self._environment(name, {**(env or {}), **own_ports})
        replica = await start_service(
            name, load_settings(settings_cls, environment), bootstrap.MIGRATIONS, bootstrap.build
        )
        self.replicas.append(replica)
        module_name, stub_name = _STUBS[name]
        stub_cls = getattr(importlib.import_module(module_name), stub_name)

        def stub(*, as_: str = "operator") -> Any:
            address = f"127.0.0.1:{replica.grpc_port}"
            channel = secure_channel(address, load_tls(self.tls_dir, as_), server_name=name)
            self._channels.append(channel)
            return stub_cls(channel)

        return replica, stub

    async def stop(self, *names: str) -> None:
        """Stop the named services (all when none are named)."""
        for name in names or tuple(reversed(self.running)):
            service = self.running.pop(name, None)
            if service is not None:
                await service.stop(grace=1.0)

    async def restart(self, name: str, env: Mapping[str, str] | None = None) -> None:
        await self.stop(name)
        await self.start(name, env=env)

    def channel(self, name: str, *, as_: str = "operator") -> grpc.aio.Channel:
        """An mTLS channel to ``name`` presenting the certificate of ``as_``."""
        channel = secure_channel(self.address(name), load_tls(self.tls_dir, as_), server_name=name)
        self._channels.append(channel)
        return channel

    def stub(self, name: str, *, as_: str = "operator") -> Any:
        module_name, stub_name = _STUBS[name]
        stub_cls = getattr(importlib.import_module(module_name), stub_name)
        return stub_cls(self.channel(name, as_=as_))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        for replica in self.replicas:
            await replica.stop(grace=1.0)
        await self.stop()
        if self._smtp_started:
            await self.smtp.stop()
            await self.card_processor.stop()
            await self.points_program.stop()
