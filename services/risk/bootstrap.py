"""Wires the risk service: storage, the in-memory policy and rules, background jobs,
the gRPC API."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

from services.risk import jobs
from services.risk.access import ACCESS
from services.risk.api.convert import policy_to_proto
from services.risk.api.service import RiskApi
from services.risk.clients.notify import notify_operators
from services.risk.domain.windows import window_start
from services.risk.settings import RiskSettings
from services.risk.storage import counters
from services.risk.use_cases.alerts import Alerts
from services.risk.use_cases.assessments import Assessments
from services.risk.use_cases.cases import Cases
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
    writer = jobs.DecisionWriter(pool)
    countries = country_lookup(settings.geoip_database)
    alerts = Alerts(pool, state, home_countries=settings.home_countries)
    api = RiskApi(
        assessments=Assessments(
            in_force=state,
            signals=counters.Counters(pool),
            decisions=writer,
            countries=countries,
        ),
        decisions=Decisions(pool, writer, countries),
        policies=Policies(pool, state, resources.stopping),
        alerts=alerts,
        cases=Cases(pool),
    )
    notify = resources.connect("notify")
    relay = OutboxRelay(pool, notify_operators(notify))

    async def stuffing_signal() -> None:
        now = datetime.now(UTC)
        first = window_start(now, state.rules.window("login.global_failures"))
        metrics.RISK_STUFFING_SIGNAL.set(await counters.global_failures_since(pool, first))

    service_metrics = metrics.for_service(resources.name)
    service_metrics.on_scrape(stuffing_signal)
    service_metrics.watch_policy(lambda: policy_to_proto(state.policy))

    return ServiceApp(
        servicers=[(risk_pb2_grpc.add_RiskServiceServicer_to_server, api)],
        service_names=[SERVICE.full_name],
        access=method_access(SERVICE, ACCESS),
        background=[
            jobs.policy_refresh(state, interval_seconds=settings.policy_poll_seconds),
            jobs.decision_writer(writer, interval_seconds=settings.decision_flush_seconds),
            jobs.counter_purge(pool),
            jobs.alert_evaluation(alerts, interval_seconds=settings.alert_interval_seconds),
            relay.run,
        ],
        closers=[writer.flush, notify.close],
    )
