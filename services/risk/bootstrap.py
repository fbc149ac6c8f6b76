"""Wires the risk service: storage, the in-memory policy and rules, background jobs,
the gRPC API."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

from services.risk import storage
from services.risk.access import ACCESS
from services.risk.alerts import AlertJob, notify_operators
from services.risk.geo import country_lookup
from services.risk.grpc_api import RiskApi, policy_to_proto
from services.risk.settings import RiskSettings
from services.risk.state import RiskState
from services.runtime import metrics
from services.runtime.outbox import OutboxRelay
from services.runtime.server import Resources, ServiceApp, method_access

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = risk_pb2.DESCRIPTOR.services_by_name["RiskService"]
_PURGE_INTERVAL_SECONDS = 300.0


async def build(resources: Resources) -> ServiceApp:
    settings = resources.settings
    assert isinstance(settings, RiskSettings)
    state = RiskState(resources.pool, poll_seconds=settings.policy_poll_seconds)
    await state.load()
    decisions = storage.DecisionLog(
        resources.pool, interval_seconds=settings.decision_flush_seconds
    )
    api = RiskApi(
        state=state,
        pool=resources.pool,
        decisions=decisions,
        countries=country_lookup(settings.geoip_database),
        stopping=resources.stopping,
    )

    alerts = AlertJob(
        resources.pool,
        state,
        interval_seconds=settings.alert_interval_seconds,
        home_countries=settings.home_countries,
    )
    notify = resources.connect("notify")
    relay = OutboxRelay(resources.pool, notify_operators(notify))

    async def purge_counters(stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await storage.purge_old_counters(resources.pool, datetime.now(UTC))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=_PURGE_INTERVAL_SECONDS)

    async def stuffing_signal() -> None:
        now = datetime.now(UTC)
        first = storage.window_start(now, state.rules.window("login.global_failures"))
        metrics.RISK_STUFFING_SIGNAL.set(await storage.global_failures_since(resources.pool, first))

    service_metrics = metrics.for_service(resources.name)
    service_metrics.on_scrape(stuffing_signal)
    service_metrics.watch_policy(lambda: policy_to_proto(state.policy))

    return ServiceApp(
        servicers=[(risk_pb2_grpc.add_RiskServiceServicer_to_server, api)],
        service_names=[SERVICE.full_name],
        access=method_access(SERVICE, ACCESS),
        background=[state.run, decisions.run, purge_counters, alerts.run, relay.run],
        closers=[decisions.flush, notify.close],
    )
