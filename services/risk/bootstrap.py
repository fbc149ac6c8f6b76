"""Wires the risk service: storage, the in-memory policy and rules, background jobs,
the gRPC API."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

from services.risk import jobs
from services.risk.access import ACCESS
from services.risk.api.convert import policy_to_proto
from services.risk.api.service import RiskApi
from services.risk.clients.notify import notify_operators
from services.risk.settings import RiskSettings
from services.risk.storage import counters
from services.risk.use_cases.alerts import Alerts
from services.risk.use_cases.assessments import Assessments, utc_now
from services.risk.use_cases.cases import Cases
from services.risk.use_cases.counting import Counting
from services.risk.use_cases.decisions import Decisions
from services.risk.use_cases.policies import Policies, RiskState
from services.runtime import metrics
from services.runtime.countries import country_lookup
from services.runtime.outbox import OutboxRelay
from services.runtime.server import Resources, ServiceApp, method_access

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = risk_pb2.DESCRIPTOR.services_by_name["RiskService"]


async def build(resources: Resources) -> ServiceApp:
    settings = resources.settings
    assert isinstance(settings, RiskSettings)
    pool = resources.pool
    state = RiskState(pool)
    await state.load()
    decision_log = jobs.decision_log(pool, max_wait=settings.decision_flush_seconds)
    countries = country_lookup(settings.geoip_database)
    alerts = Alerts(pool, state, home_countries=settings.home_countries)
    store = counters.CounterStore(pool)
    counting = Counting(
        store, store, state, clock=utc_now, sync_seconds=settings.counter_sync_seconds
    )
    api = RiskApi(
        assessments=Assessments(
            in_force=state,
            signals=counting,
            decisions=decision_log,
            countries=countries,
        ),
        decisions=Decisions(pool, counting, countries),
        policies=Policies(pool, state, resources.stopping),
        alerts=alerts,
        cases=Cases(pool),
    )
    notify = resources.connect("notify")
    relay = OutboxRelay(
        pool,
        notify_operators(notify),
        retention=timedelta(days=settings.outbox_retention_days),
    )

    async def stuffing_signal() -> None:
        seconds = state.rules.window("login.global_failures")
        metrics.RISK_STUFFING_SIGNAL.set(counting.global_failures(seconds))

    service_metrics = metrics.for_service(resources.name)
    service_metrics.on_scrape(stuffing_signal)
    service_metrics.watch_policy(lambda: policy_to_proto(state.policy))

    return ServiceApp(
        servicers=[(risk_pb2_grpc.add_RiskServiceServicer_to_server, api)],
        service_names=[SERVICE.full_name],
        access=method_access(SERVICE, ACCESS),
        background=[
            jobs.policy_refresh(state, interval_seconds=settings.policy_poll_seconds),
            jobs.counter_sync(counting, interval_seconds=settings.counter_sync_seconds),
            jobs.counter_purge(pool),
            jobs.alert_evaluation(alerts, interval_seconds=settings.alert_interval_seconds),
            jobs.stuffing_watch(alerts, interval_seconds=settings.stuffing_watch_seconds),
            relay.run,
        ],
        closers=[decision_log.drain, notify.close],
    )
