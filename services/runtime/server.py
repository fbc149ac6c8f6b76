"""The grpc.aio server lifecycle every service shares.

Start-up order matters to Kubernetes: the plaintext health-only port comes up
first and answers NOT_SERVING while the database pool is opened and migrations
run; only when the service is wired and its mTLS port is listening does health
turn SERVING. SIGTERM reverses it: NOT_SERVING at once, stop accepting, let
in-flight RPCs finish within the grace period, stop background work, close the
pool, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import structlog
import uvloop
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.runtime import metrics, tracing
from services.runtime.access import Access, AccessInterceptor
from services.runtime.config import ConfigError, ServiceSettings, load_settings
from services.runtime.contracts import RequestValidationInterceptor
from services.runtime.db import (
    close_pool,
    create_pool,
    describe_database,
    not_ready_reason,
    session_connection,
)
from services.runtime.decoding import RequestDecodingInterceptor
from services.runtime.errors import ErrorMappingInterceptor
from services.runtime.logging import configure_logging
from services.runtime.migrations import MigrationError, migrate
from services.runtime.rpc_context import RpcLogInterceptor, request_id_client_interceptors
from services.runtime.tls import TlsMaterial, load_tls, secure_channel, server_credentials
from services.runtime.tokens import TokenVerifier

log = structlog.get_logger("mamoru.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
Closer = Callable[[], Awaitable[None]]
AddServicer = Callable[[Any, grpc.aio.Server], None]


@dataclass
class Resources:
    """What the runtime has opened for a service before wiring it."""

    name: str
    settings: ServiceSettings
    pool: asyncpg.Pool
    tls: TlsMaterial
    # Set when shutdown begins, so endless streams (WatchPolicies, WatchRevocations)
    # end at once instead of holding the drain for the whole grace period.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def connect(self, peer: str) -> grpc.aio.Channel:
        """An mTLS channel to another service, traced and carrying the request id."""
        interceptors: list[Any] = [
            *tracing.client_interceptors(),
            *request_id_client_interceptors(),
        ]
        return secure_channel(
            self.settings.peer_address(peer), self.tls, server_name=peer, interceptors=interceptors
        )


@dataclass
class ServiceApp:
    """What a service's bootstrap hands back to the runtime."""

    servicers: Sequence[tuple[AddServicer, object]]
    service_names: Sequence[str]
    access: Mapping[str, Access]
    verifier: TokenVerifier | None = None
    background: Sequence[Background] = ()
    closers: Sequence[Closer] = ()


BuildApp = Callable[[Resources], Awaitable[ServiceApp]]


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """Connections end after a while, so clients spread over replicas added since.

    gRPC sends GOAWAY at the age limit; RPCs in flight get the grace period, and
    the followers' streams then reconnect (to any replica) and resume.
    """
    return [
        ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_seconds * 1000)),
        (
            "grpc.max_connection_age_grace_ms",
            int(settings.grpc_max_connection_age_grace_seconds * 1000),
        ),
    ]


def rpc_interceptors(
    service_metrics: metrics.ServiceMetrics,
    access: Mapping[str, Access],
    verifier: TokenVerifier | None,
) -> list[Any]:
    """The runtime layers around every RPC of a service's mTLS port, outermost first."""
    return [
        *tracing.server_interceptors(),
        RpcLogInterceptor(),
        RequestDecodingInterceptor(),
        metrics.MetricsInterceptor(service_metrics),
        AccessInterceptor(access, verifier),
        ErrorMappingInterceptor(),
        # Innermost: the proto's rules, once the caller may call the RPC at all.
        RequestValidationInterceptor(),
    ]


def method_access(service: ServiceDescriptor, rules: Mapping[str, Access]) -> dict[str, Access]:
    """Key a service's access rules by full method name, insisting every RPC has one."""
    methods = set(service.methods_by_name)
    missing, unknown = methods - set(rules), set(rules) - methods
    if missing or unknown:
        raise ValueError(
            f"access rules of {service.full_name}: "
            f"missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    return {f"/{service.full_name}/{name}": access for name, access in rules.items()}


class RunningService:
    """A started service: its ports, and how to stop it gracefully."""

    def __init__(
        self,
        *,
        name: str,
        settings: ServiceSettings,
        server: grpc.aio.Server,
        health_server: grpc.aio.Server,
        health: grpc_health.aio.HealthServicer,
        grpc_port: int,
        health_port: int,
        pool: asyncpg.Pool,
        app: ServiceApp,
        stopping: asyncio.Event,
        metrics_endpoint: metrics.MetricsEndpoint | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.grpc_port = grpc_port
        self.health_port = health_port
        self.pool = pool
        self.app = app
        self._server = server
        self._health_server = health_server
        self._health = health
        self._stopping_event = stopping
        self._metrics_endpoint = metrics_endpoint
        self.metrics_port = metrics_endpoint.port if metrics_endpoint is not None else 0
        self._stop_background = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = [
            asyncio.create_task(job(self._stop_background), name=f"{name}-background")
            for job in app.background
        ]
        self._stopped = asyncio.Event()
        self._stopping = False

    @property
    def address(self) -> str:
        return f"{self.settings.grpc_host}:{self.grpc_port}"

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, stop accepting, drain within ``grace``, then release everything."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        log.info("service.stopping", grace_seconds=grace)
        await self._health.enter_graceful_shutdown()
        self._stopping_event.set()
        await self._server.stop(grace)
        self._stop_background.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=max(grace, 1.0))
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for close in self.app.closers:
            with contextlib.suppress(Exception):
                await close()
        await close_pool(self.pool)
        if self._metrics_endpoint is not None:
            await self._metrics_endpoint.stop()
        await self._health_server.stop(0)
        tracing.shutdown_tracing()
        log.info("service.stopped")
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


async def start_service(
    name: str, settings: ServiceSettings, migrations: Path, build: BuildApp
) -> RunningService:
    """Open the database, migrate, wire the service and start serving."""
    configure_logging(name, fmt=settings.log_format, level=settings.log_level)
    tracing.configure_tracing(
        name, settings.otlp_endpoint, sample_ratio=settings.trace_sample_ratio
    )
    structlog.contextvars.bind_contextvars(service=name)

    health = grpc_health.aio.HealthServicer()
    await health.set("", NOT_SERVING)
    health_server = grpc.aio.server(interceptors=[RequestDecodingInterceptor()])
    health_pb2_grpc.add_HealthServicer_to_server(health, health_server)
    health_port = health_server.add_insecure_port(f"{settings.grpc_host}:{settings.health_port}")
    await health_server.start()
    log.info("health.listening", port=health_port)

    pool: asyncpg.Pool | None = None
    endpoint: metrics.MetricsEndpoint | None = None
    try:
        tls = load_tls(settings.tls_dir, name)
        pool = await _open_database(name, settings, migrations)
        service_metrics = metrics.for_service(name)
        service_metrics.start_over()
        service_metrics.watch_pool(pool)
        resources = Resources(name=name, settings=settings, pool=pool, tls=tls)
        app = await build(resources)

        server = grpc.aio.server(
            interceptors=rpc_interceptors(service_metrics, app.access, app.verifier),
            options=server_options(settings),
        )
        for add, servicer in app.servicers:
            add(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            [
                *app.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        grpc_port = server.add_secure_port(
            f"{settings.grpc_host}:{settings.grpc_port}", server_credentials(tls)
        )
        await server.start()
        endpoint = metrics.MetricsEndpoint(service_metrics)
        await endpoint.start(settings.grpc_host, settings.metrics_port)
    except BaseException:
        if endpoint is not None:
            await endpoint.stop()
        if pool is not None:
            await close_pool(pool)
        await health_server.stop(0)
        raise

    running = RunningService(
        name=name,
        settings=settings,
        server=server,
        health_server=health_server,
        health=health,
        grpc_port=grpc_port,
        health_port=health_port,
        pool=pool,
        app=app,
        stopping=resources.stopping,
        metrics_endpoint=endpoint,
    )
    for service_name in ("", *app.service_names):
        await health.set(service_name, SERVING)
    log.info(
        "service.serving",
        grpc_port=grpc_port,
        health_port=health_port,
        metrics_port=endpoint.port,
    )
    return running


# Waiting for a database that is not there yet: first pause, and the longest.
DATABASE_RETRY_FIRST_SECONDS = 0.5
DATABASE_RETRY_MAX_SECONDS = 10.0


async def _open_database(name: str, settings: ServiceSettings, migrations: Path) -> asyncpg.Pool:
    """The migrated pool, once the database can be reached; health stays NOT_SERVING meanwhile.

    A database that is unreachable, restarting or not yet created is waited for,
    with one line per attempt naming it (host, port, database; never the
    password). Refused credentials end the start as a configuration error.
    """
    url = settings.database_url.reveal()
    where = describe_database(url)
    delay = DATABASE_RETRY_FIRST_SECONDS
    attempt = 0
    while True:
        attempt += 1
        pool: asyncpg.Pool | None = None
        try:
            pooled = settings.behind_transaction_pooler()
            pool = await create_pool(
                url,
                max_size=settings.db_pool_max,
                direct_url=settings.direct_database_url() if pooled else None,
            )
            # Migrations hold a session advisory lock, so they never go through a pooler.
            async with session_connection(pool, application_name=f"mamoru-{name}-migrate") as conn:
                applied = await migrate(conn, name, migrations)
        except asyncpg.InvalidAuthorizationSpecificationError:
            raise ConfigError(f"database {where} refused this service's credentials") from None
        except Exception as error:
            if pool is not None:
                await close_pool(pool)
            reason = not_ready_reason(error, url)
            if reason is None:
                raise
            log.warning(
                "database.unavailable",
                database=where,
                attempt=attempt,
                retry_in=round(delay, 1),
                reason=reason,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, DATABASE_RETRY_MAX_SECONDS)
            continue
        if attempt > 1:
            log.info("database.ready", database=where, attempts=attempt)
        log.info("migrations.applied", applied=applied)
        return pool


async def serve_until_signalled(
    name: str, settings: ServiceSettings, migrations: Path, build: BuildApp
) -> int:
    """Run until SIGTERM or SIGINT, then stop gracefully. Returns the exit code."""
    try:
        running = await start_service(name, settings, migrations, build)
    except (MigrationError, ConfigError) as error:
        log.error("service.start_failed", error=str(error))
        return 1
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    await signalled.wait()
    await running.stop()
    return 0


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def main(name: str, settings_cls: type[SettingsT], migrations: Path, build: BuildApp) -> None:
    """Entry point of ``python -m services.<name>``."""
    try:
        settings = load_settings(settings_cls)
    except ConfigError as error:
        print(f"mamoru-{name}: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # uvloop's event loop (libuv, what asyncpg is built for): each RPC and statement
    # costs the loop less CPU than with the standard library's selector loop.
    raise SystemExit(uvloop.run(serve_until_signalled(name, settings, migrations, build)))
