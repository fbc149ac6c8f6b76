"""Wires the identity service: storage, clients of other services, the gRPC API."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from mamoru.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity import jobs
from services.identity.access import ACCESS
from services.identity.api import IdentityApi
from services.identity.clients.admission import PolicyAdmission
from services.identity.clients.contact_changes import ContactChangeFeed
from services.identity.clients.external import IdTokenVerifier, parse_providers
from services.identity.clients.hashing import HashBudget, PasswordHasher
from services.identity.clients.notices import outbox_router
from services.identity.clients.pwned import PwnedRange
from services.identity.clients.revocations import RevocationFeed
from services.identity.clients.risk import RiskClient
from services.identity.domain.admission import Refusal
from services.identity.domain.sealing import Pseudonyms, SecretBox
from services.identity.settings import IdentitySettings
from services.identity.storage.sign_in import PgSignInStore
from services.identity.use_cases import Identity
from services.identity.use_cases.keys import KeyRing
from services.runtime import metrics
from services.runtime.countries import country_lookup
from services.runtime.outbox import OutboxRelay
from services.runtime.peers import TOKEN_ISSUER, PolicyView, follow_policies
from services.runtime.server import Resources, ServiceApp, method_access
from services.runtime.tokens import JwksCache, RevocationList, TokenVerifier

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]


async def build(resources: Resources) -> ServiceApp:
    settings = resources.settings
    assert isinstance(settings, IdentitySettings)
    sealing_key = settings.sealing_key()
    box = SecretBox(sealing_key)
    keys = KeyRing(resources.pool, box, rotate_every=timedelta(hours=settings.key_rotation_hours))
    await keys.start()

    risk_channel = resources.connect("risk")
    notify_channel = resources.connect("notify")
    wallet_channel = resources.connect("wallet")
    risk = RiskClient(
        risk_channel,
        timeout_seconds=settings.risk_timeout_seconds,
        refusal_reports_per_second=settings.refusal_reports_per_second,
    )
    policies = PolicyView()
    budget = HashBudget(
        settings.hash_slot_plan(),
        queue=settings.hash_queue,
        new_wait=settings.hash_wait_seconds,
        known_wait=settings.known_device_hash_wait_seconds,
    )
    for reason in Refusal:
        # Every reason shows (at 0) from the start, so a rate over it is never empty.
        metrics.IDENTITY_REFUSED_WITHOUT_HASH.labels(reason)
    identity = Identity(
        pool=resources.pool,
        settings=settings,
        keys=keys,
        risk=risk,
        hasher=PasswordHasher(budget),
        box=box,
        pseudonyms=Pseudonyms(settings.pseudonym_key_bytes() or sealing_key),
        policies=policies,
        admission=PolicyAdmission(policies, country_lookup(settings.geoip_database)),
        sign_in_store=PgSignInStore(resources.pool),
        pwned=PwnedRange(settings.pwned_range_url) if settings.pwned_range_url else None,
        providers={
            name: IdTokenVerifier(provider)
            for name, provider in parse_providers(settings.oidc_providers).items()
        },
    )
    metrics.for_service(resources.name).watch_policy(lambda: policies.policy)
    feed = RevocationFeed(resources.pool)
    # Identity verifies its own person tokens from its own key store, never by calling itself.
    own_revocations = RevocationList()
    verifier = TokenVerifier(
        JwksCache(keys.jwks_fresh), issuer=TOKEN_ISSUER, revocations=own_revocations
    )
    relay = OutboxRelay(
        resources.pool,
        outbox_router(
            notify_channel,
            wallet_channel,
            reset_request=identity.process_reset_request,
            failed_sign_in=identity.process_failed_sign_in,
        ),
        retention=timedelta(days=settings.outbox_retention_days),
    )

    contact_changes = ContactChangeFeed(resources.pool)
    servicer = IdentityApi(identity, feed, resources.stopping, contact_changes)
    return ServiceApp(
        servicers=[(identity_pb2_grpc.add_IdentityServiceServicer_to_server, servicer)],
        service_names=[SERVICE.full_name],
        access=method_access(SERVICE, ACCESS),
        verifier=verifier,
        background=[
            jobs.follow_signing_keys(keys),
            feed.listen,
            contact_changes.listen,
            lambda stop: feed.follow_into(own_revocations, stop),
            relay.run,
            jobs.forget_spent_proofs(resources.pool),
            follow_policies(risk_channel, policies, subscriber="identity"),
        ],
        closers=[risk.drain, risk_channel.close, notify_channel.close, wallet_channel.close],
    )
