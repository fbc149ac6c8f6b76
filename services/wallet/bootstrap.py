"""Wires the wallet service: storage, clients of other services, use cases, the gRPC API."""

from __future__ import annotations

from datetime import timedelta
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
from services.wallet.api.handlers import WalletServicer
from services.wallet.clients import outbox
from services.wallet.clients.card_processor import CardProcessor
from services.wallet.clients.points import PointsProgram
from services.wallet.clients.risk import RiskGate
from services.wallet.jobs import SessionVoider
from services.wallet.settings import WalletSettings
from services.wallet.storage import Storage
from services.wallet.use_cases.merchants import MerchantDirectory
from services.wallet.use_cases.payments import StorePayments
from services.wallet.use_cases.payouts import Payouts
from services.wallet.use_cases.refunds import Refunds
from services.wallet.use_cases.top_ups import TopUps
from services.wallet.use_cases.wallets import Wallets

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
    storage = Storage(
        resources.pool,
        settings.limits(),
        timezone=settings.timezone,
        session_revoked=revocations.is_revoked,
    )
    voider = SessionVoider(storage.revoked_sessions)
    relay = OutboxRelay(
        resources.pool,
        outbox.delivery(notify_pb2_grpc.NotifyServiceStub(notify), gate.record_outcome, processor),
        retention=timedelta(days=settings.outbox_retention_days),
    )
    metrics.for_service(resources.name).watch_policy(lambda: policies.policy)
    servicer = WalletServicer(
        wallets=Wallets(
            storage.wallets,
            storage.ledger,
            storage.top_ups,
            gate,
            enroll_max_auth_age_seconds=settings.enroll_max_auth_age_seconds,
        ),
        top_ups=TopUps(
            storage.wallets,
            storage.funding_sources,
            storage.top_ups,
            storage.codes,
            gate,
            card=processor,
            points=points,
            verifier=processor,
            new_source_max_auth_age_seconds=settings.new_source_max_auth_age_seconds,
            cash_code_seconds=settings.cash_code_seconds,
        ),
        payments=StorePayments(
            storage.codes,
            storage.payments,
            gate,
            payment_code_seconds=settings.payment_code_seconds,
            hold_seconds=settings.hold_seconds,
        ),
        refunds=Refunds(storage.refunds, storage.compensation, processor, gate),
        payouts=Payouts(
            storage.wallets,
            storage.payouts,
            gate,
            payout_max_auth_age_seconds=settings.payout_max_auth_age_seconds,
        ),
        merchants=MerchantDirectory(storage.merchants),
    )
    return ServiceApp(
        servicers=[(wallet_pb2_grpc.add_WalletServiceServicer_to_server, servicer)],
        service_names=[SERVICE.full_name],
        access=method_access(SERVICE, ACCESS),
        verifier=verifier,
        background=[
            follow_revocations(identity, revocations, on_revoked=voider.revoked),
            voider.job(),
            follow_policies(risk, policies, subscriber=f"wallet@{resources.name}"),
            relay.run,
        ],
        closers=[processor.close, points.close, identity.close, risk.close, notify.close],
    )
