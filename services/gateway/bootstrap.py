"""Wires the partner gateway: storage, the wallet and risk, the HTTP API, the relay."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from services.gateway import jobs
from services.gateway.access import ACCESS
from services.gateway.api.app import create_app
from services.gateway.api.security import Guard
from services.gateway.clients.policy import PartnerSwitch
from services.gateway.clients.wallet import WalletClient
from services.gateway.clients.webhooks import SystemResolver, WebhookSender
from services.gateway.domain.partners import Partner
from services.gateway.domain.sealing import SecretBox, derive
from services.gateway.settings import GatewaySettings
from services.gateway.storage import partners as partner_store
from services.gateway.storage import requests as request_store
from services.gateway.storage.webhooks import TOPIC
from services.gateway.use_cases.partners import PartnerDirectory, parse_client_id
from services.gateway.use_cases.payments import Payments
from services.gateway.use_cases.tokens import TokenService
from services.gateway.use_cases.webhooks import Webhooks
from services.runtime import metrics
from services.runtime.http import bind, http_server
from services.runtime.outbox import OutboxRelay
from services.runtime.peers import PolicyView, follow_policies
from services.runtime.server import Resources, ServiceApp
from services.runtime.topics import OutboxRouter

MIGRATIONS = Path(__file__).parent / "migrations"


async def build(resources: Resources) -> ServiceApp:
    settings = resources.settings
    assert isinstance(settings, GatewaySettings)
    pool = resources.pool
    wallet = resources.connect("wallet")
    risk = resources.connect("risk")
    policies = PolicyView()
    metrics.for_service(resources.name).watch_policy(lambda: policies.policy)
    switch = PartnerSwitch(policies)
    key = settings.sealing_key()
    box = SecretBox(key)
    directory = PartnerDirectory(pool, settings.partner_cache_seconds)

    async def find_partner(client_id: str) -> Partner | None:
        partner_id = parse_client_id(client_id)
        partner = None if partner_id is None else await directory.get(partner_id)
        if partner is None or not partner.active or switch.suspended(partner.partner_id):
            return None
        return partner

    async def remember_jti(partner_id: uuid.UUID, jti: str, expires_at: float) -> bool:
        return await partner_store.remember_jti(pool, partner_id, jti, expires_at)

    async def count_attempt(client: uuid.UUID) -> float | None:
        # A bucket of its own, so failed token requests never use up a partner's API calls.
        bucket = uuid.uuid5(client, "token-requests")
        count, remaining = await request_store.count_request(pool, bucket)
        return remaining if count > settings.token_requests_per_minute else None

    tokens = TokenService(
        issuer=settings.issuer(),
        signing_key=derive(key, "mamoru-gateway access tokens v1"),
        token_seconds=settings.token_seconds,
        find_partner=find_partner,
        remember_jti=remember_jti,
        count_attempt=count_attempt,
    )
    resolver = SystemResolver()
    sender = WebhookSender(
        settings.webhook_timeout_seconds,
        resolver=resolver,
        allow_private=settings.allow_http_webhooks,
    )
    webhooks = Webhooks(
        pool,
        box,
        sender,
        resolver,
        allow_http=settings.allow_http_webhooks,
        max_subscriptions=settings.webhook_subscriptions_per_partner,
    )

    router = OutboxRouter().on(TOPIC, lambda _ref, message: webhooks.deliver(message))
    relay = OutboxRelay(
        pool,
        router,
        max_attempts=settings.webhook_max_attempts,
        base_backoff_seconds=settings.webhook_backoff_seconds,
        max_backoff_seconds=max(3600.0, settings.webhook_backoff_seconds),
        lease_seconds=max(30.0, settings.webhook_timeout_seconds * 4),
        delivery_timeout_seconds=settings.webhook_timeout_seconds + 1,
        retention=timedelta(days=settings.outbox_retention_days),
        poll_interval_seconds=1.0,
    )

    async def ready() -> bool:
        # The kill switch must be known before the gateway takes partners' calls.
        return policies.policy is not None

    app = create_app(
        issuer=settings.issuer(),
        guard=Guard(tokens=tokens, partners=directory, switch=switch, pool=pool),
        tokens=tokens,
        payments=Payments(pool, WalletClient(wallet, settings.wallet_timeout_seconds), box),
        webhooks=webhooks,
        ready=ready,
    )
    sock = bind(settings.http_host, settings.http_port)
    return ServiceApp(
        servicers=[],
        service_names=[],
        access=ACCESS,
        background=[
            follow_policies(risk, policies, subscriber=f"gateway@{resources.name}"),
            http_server(
                app,
                sock,
                stopping=resources.stopping,
                grace_seconds=settings.shutdown_grace_seconds,
            ),
            relay.run,
            jobs.housekeeping(pool),
        ],
        closers=[sender.close, wallet.close, risk.close],
    )
