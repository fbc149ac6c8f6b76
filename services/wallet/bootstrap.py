"""Wires the wallet service: storage, clients of other services, the gRPC API."""

from __future__ import annotations

from pathlib import Path

from mamoru.notify.v1 import notify_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.runtime import metrics
from services.runtime.outbox import OutboxRelay
from services.runtime.peers import (
    PolicyView,
    follow_policies,
    follow_revocations,
    identity_token_verifier,
)
from services.runtime.server import Resources, ServiceApp, method_access
from services.wallet.access import ACCESS
from services.wallet.app import outbox_delivery
from services.wallet.grpc_api import WalletServicer
from services.wallet.points import PointsProgram
from services.wallet.processor import CardProcessor
from services.wallet.revocations import SessionVoider
from services.wallet.risk_gate import RiskGate
from services.wallet.settings import WalletSettings
from services.wallet.storage import WalletStore

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"]


async def build(resources: Resources) -> ServiceApp:
    settings = resources.settings
    assert isinstance(settings, WalletSettings)
    identity = resources.connect("identity")
    risk = resources.connect("risk")
    notify = resources.connect("notify")
    verifier, revocations = identity_token_verifier(identity)
    policies = PolicyView()
    gate = RiskGate(risk, policies, timeout=settings.risk_timeout_seconds)
    processor = CardProcessor(
        settings.processor_url, timeout_seconds=settings.processor_timeout_seconds
    )
    points = PointsProgram(settings.points_url, timeout_seconds=settings.points_timeout_seconds)
    store = WalletStore(
        resources.pool,
        settings.limits(),
        timezone=settings.timezone,
        session_revoked=revocations.is_revoked,
    )
    voider = SessionVoider(store)
    relay = OutboxRelay(
        resources.pool,
        outbox_delivery(notify_pb2_grpc.NotifyServiceStub(notify), gate.record_outcome, processor),
    )
    metrics.for_service(resources.name).watch_policy(lambda: policies.policy)
    servicer = WalletServicer(store, processor, points, gate, settings)
    return ServiceApp(
        servicers=[(wallet_pb2_grpc.add_WalletServiceServicer_to_server, servicer)],
        service_names=[SERVICE.full_name],
        access=method_access(SERVICE, ACCESS),
        verifier=verifier,
        background=[
            follow_revocations(identity, revocations, on_revoked=voider.revoked),
            voider.run,
            follow_policies(risk, policies, subscriber=f"wallet@{resources.name}"),
            relay.run,
        ],
        closers=[processor.close, points.close, identity.close, risk.close, notify.close],
    )
