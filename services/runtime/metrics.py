"""Prometheus metrics: one registry per service, served as text at ``/metrics``.

Counters and histograms are updated where things happen (one dictionary lookup
and an increment per RPC). Gauges that describe shared state (pool use, outbox
backlog, the stuffing signal, kill switches) are read when Prometheus scrapes,
by the refreshers a service registers, so every replica reports the same view of
the database and nothing is polled between scrapes.

Each service has a registry of its own because tests run several services in
one process; a series from one never shows on another's endpoint.

Series (the manifests' alerts use these names):

- ``mamoru_rpc_requests_total{service,method,code}``,
  ``mamoru_rpc_duration_seconds{service,method}``
- ``mamoru_db_pool_connections{service,state}`` (state: ``in_use``, ``idle``, ``max``)
- ``mamoru_outbox_backlog{service}``, ``mamoru_outbox_oldest_age_seconds{service}``
- notify: ``mamoru_notify_delivery_lag_seconds``, ``mamoru_notify_retries_total``,
  ``mamoru_notify_dead_letters_total``
- risk: ``mamoru_risk_decisions_total{assessment,outcome}``, ``mamoru_risk_stuffing_signal``
- identity: ``mamoru_identity_password_hashes_total``,
  ``mamoru_identity_password_hashes_in_flight``,
  ``mamoru_identity_refused_without_hash_total{reason}``
- every service that enforces risk's policy, and risk: ``mamoru_kill_switch{switch}``
- gateway and console (their HTTP APIs, ``services/runtime/http_metrics.py``):
  ``mamoru_http_requests_total{service,method,route,code}``,
  ``mamoru_http_request_duration_seconds{service,method,route}``
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import structlog
from aiohttp import web
from mamoru.risk.v1 import risk_pb2
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from services.runtime.handlers import (
    Context,
    HandlerInterceptor,
    final_status,
    observed,
    wrap_handler,
)

log = structlog.get_logger("mamoru.metrics")

Refresher = Callable[[], Awaitable[None]]

# A scrape must answer even when the database is slow; stale gauges beat no answer.
_REFRESH_TIMEOUT_SECONDS = 2.0
# Most RPCs take milliseconds; sign-ins (argon2) and card captures take longer.
_RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Unknown method names come from callers; one label keeps them from growing the series.
_UNKNOWN_METHOD = "unknown"

# A ``*_created`` series per counter doubles what Prometheus stores and no alert uses it.
disable_created_metrics()  # type: ignore[no-untyped-call]

_registries: dict[str, CollectorRegistry] = {}


def registry(service: str) -> CollectorRegistry:
    """The registry of ``service`` in this process, made on first use."""
    found = _registries.get(service)
    if found is None:
        found = _registries[service] = CollectorRegistry(auto_describe=True)
    return found


# ---------------------------------------------------------------- per service

NOTIFY_DELIVERY_LAG = Gauge(
    "mamoru_notify_delivery_lag_seconds",
    "How long the oldest unsent delivery (pending or awaiting a retry) has waited",
    registry=registry("notify"),
)
NOTIFY_RETRIES = Counter(
    "mamoru_notify_retries",
    "Failed delivery attempts that will be retried",
    registry=registry("notify"),
)
NOTIFY_DEAD_LETTERS = Counter(
    "mamoru_notify_dead_letters",
    "Deliveries given up after their last attempt",
    registry=registry("notify"),
)
RISK_DECISIONS = Counter(
    "mamoru_risk_decisions",
    "Risk decisions by assessment (login, registration, top_up, payment) and verdict",
    ["assessment", "outcome"],
    registry=registry("risk"),
)
RISK_STUFFING_SIGNAL = Gauge(
    "mamoru_risk_stuffing_signal",
    "Failed sign-ins across all IPs within the stuffing-wave window (all replicas)",
    registry=registry("risk"),
)
IDENTITY_PASSWORD_HASHES = Counter(
    "mamoru_identity_password_hashes",
    "argon2id hashes and verifications performed",
    registry=registry("identity"),
)
IDENTITY_HASHES_IN_FLIGHT = Gauge(
    "mamoru_identity_password_hashes_in_flight",
    "argon2id hashes waiting for or running in a worker thread (the hashing queue)",
    registry=registry("identity"),
)
IDENTITY_REFUSED_WITHOUT_HASH = Counter(
    "mamoru_identity_refused_without_hash",
    "Password attempts refused before any hash was computed, by reason (risk_verdict, "
    "blocked_network, blocked_country, contained_network, failure_cap, hash_budget)",
    ["reason"],
    registry=registry("identity"),
)


class ServiceMetrics:
    """The series every service has, and the refreshers run before each scrape."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = registry(service)
        self.rpc_requests = Counter(
            "mamoru_rpc_requests",
            "RPCs served, by method and final status code",
            ["service", "method", "code"],
            registry=self.registry,
        )
        self.rpc_duration = Histogram(
            "mamoru_rpc_duration_seconds",
            "Time to serve an RPC (streams: until they end)",
            ["service", "method"],
            buckets=_RPC_BUCKETS,
            registry=self.registry,
        )
        self.db_pool = Gauge(
            "mamoru_db_pool_connections",
            "Database pool connections by state (in_use, idle, max)",
            ["service", "state"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "mamoru_outbox_backlog",
            "Outbox messages not yet delivered (pending)",
            ["service"],
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "mamoru_outbox_oldest_age_seconds",
            "Age of the oldest pending outbox message (0 when none)",
            ["service"],
            registry=self.registry,
        )
        self.kill_switch = Gauge(
            "mamoru_kill_switch",
            "1 while a kill switch is on, as this process enforces it",
            ["switch"],
            registry=self.registry,
        )
        self._refreshers: list[Refresher] = []
        # method -> (duration child, code name -> counter child), filled on first use.
        self._rpc_children: dict[str, tuple[Any, dict[str, Any]]] = {}

    def start_over(self) -> None:
        """Forget the refreshers of a previous start of the service in this process."""
        self._refreshers.clear()

    def on_scrape(self, refresher: Refresher) -> None:
        """Run ``refresher`` before every scrape (bounded in time, failures tolerated)."""
        self._refreshers.append(refresher)

    def watch_pool(self, pool: asyncpg.Pool) -> None:
        """Report ``pool``'s connections and this database's outbox at each scrape."""

        async def refresh() -> None:
            size, idle = pool.get_size(), pool.get_idle_size()
            self.db_pool.labels(self.service, "in_use").set(size - idle)
            self.db_pool.labels(self.service, "idle").set(idle)
            self.db_pool.labels(self.service, "max").set(pool.get_max_size())
            row = await pool.fetchrow(
                "select count(*) as backlog,"
                " coalesce(extract(epoch from now() - min(created_at)), 0)::float8 as oldest"
                " from outbox where state = 'pending'"
            )
            if row is not None:
                self.outbox_backlog.labels(self.service).set(row["backlog"])
                self.outbox_oldest_age.labels(self.service).set(max(row["oldest"], 0.0))

        self.on_scrape(refresh)

    def watch_policy(self, current: Callable[[], Any]) -> None:
        """Report the kill switches of ``current()`` (a risk ``Policy``, or None) at each scrape."""

        async def refresh() -> None:
            policy = current()
            if policy is not None:
                for switch, on in kill_switches(policy).items():
                    self.kill_switch.labels(switch).set(1 if on else 0)

        self.on_scrape(refresh)

    async def refresh(self) -> None:
        for refresher in self._refreshers:
            try:
                async with asyncio.timeout(_REFRESH_TIMEOUT_SECONDS):
                    await refresher()
            except Exception as error:
                log.warning("metrics.refresh_failed", error=str(error) or type(error).__name__)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def rpc_children(self, method: str) -> tuple[Any, dict[str, Any]]:
        children = self._rpc_children.get(method)
        if children is None:
            children = (self.rpc_duration.labels(self.service, method), {})
            self._rpc_children[method] = children
        return children

    def count_rpc(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        duration, by_code = self.rpc_children(method)
        duration.observe(seconds)
        counter = by_code.get(code.name)
        if counter is None:
            counter = by_code[code.name] = self.rpc_requests.labels(self.service, method, code.name)
        counter.inc()


_services: dict[str, ServiceMetrics] = {}


def for_service(service: str) -> ServiceMetrics:
    """The one ``ServiceMetrics`` of ``service`` in this process."""
    found = _services.get(service)
    if found is None:
        found = _services[service] = ServiceMetrics(service)
    return found


def kill_switches(policy: Any) -> dict[str, bool]:
    """Kill switches of a ``mamoru.risk.v1.Policy`` message, by switch name."""
    switches = {
        "registration": policy.registration_suspended,
        "payments": policy.payments_suspended,
        "wind_down": policy.wind_down,
    }
    suspended = set(policy.top_up_suspended_channels)
    for value in risk_pb2.TopUpChannel.values():
        name = risk_pb2.TopUpChannel.Name(value).removeprefix("TOP_UP_CHANNEL_").lower()
        if name != "unspecified":
            switches[f"top_up_{name}"] = value in suspended
    return switches


class MetricsInterceptor(HandlerInterceptor):
    """Counts every RPC by method and final code, and times it."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def unknown_method(self, details: grpc.HandlerCallDetails) -> None:
        self._metrics.count_rpc(_UNKNOWN_METHOD, grpc.StatusCode.UNIMPLEMENTED, 0.0)

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        return wrap_handler(handler, observed(functools.partial(self._timed, method)))

    def _timed(self, method: str, context: Context) -> Callable[[BaseException | None], None]:
        started = time.perf_counter()

        def end(error: BaseException | None) -> None:
            seconds = time.perf_counter() - started
            self._metrics.count_rpc(method, final_status(context, error), seconds)

        return end


class MetricsEndpoint:
    """A plaintext HTTP server answering ``GET /metrics`` for one service."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, _: web.Request) -> web.Response:
        await self._metrics.refresh()
        return web.Response(
            body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
