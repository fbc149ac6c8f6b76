"""Wires the notify service: storage, identity's contact directory, channel
providers, the delivery job and the gRPC API."""

from __future__ import annotations

from pathlib import Path

from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc

from services.notify.access import ACCESS
from services.notify.api.handlers import NotifyApi
from services.notify.clients.channels import HttpProvider, Provider, ProviderChain, SmtpProvider
from services.notify.clients.contacts import (
    KEPT_CONTACTS,
    IdentityContactDirectory,
    follow_contact_changes,
    stream_opening,
)
from services.notify.domain.kinds import Channel
from services.notify.domain.notices import RateLimit
from services.notify.jobs import Lingering, delivery_queue
from services.notify.settings import NotifySettings
from services.notify.storage.deliveries import DeliveryStore
from services.notify.storage.inbox import InboxStore
from services.notify.storage.notices import NoticeStore
from services.notify.storage.preferences import PreferenceStore
from services.notify.use_cases.contacts import KeptContacts
from services.notify.use_cases.deliveries import DeliveryAttempts
from services.notify.use_cases.inbox import PersonalView
from services.notify.use_cases.notices import Sending
from services.notify.use_cases.operations import Operations
from services.runtime import metrics
from services.runtime.config import Secret
from services.runtime.peers import follow_revocations, identity_token_verifier
from services.runtime.queue import RetryPolicy
from services.runtime.server import Closer, Resources, ServiceApp, method_access

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = notify_pb2.DESCRIPTOR.services_by_name["NotifyService"]


def email_providers(settings: NotifySettings) -> list[SmtpProvider]:
    """The main relay first, then each fallback relay, with the same TLS and AUTH."""
    relays = [(settings.smtp_host, settings.smtp_port)]
    for relay in settings.smtp_fallback_relays:
        host, _, port = relay.rpartition(":")
        relays.append((host, int(port)))
    return [
        SmtpProvider(
            f"smtp:{host}:{port}",
            host=host,
            port=port,
            mail_from=settings.mail_from,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout_seconds=settings.smtp_timeout_seconds,
        )
        for host, port in relays
    ]


def http_providers(
    channel: str, endpoints: tuple[str, ...], key: Secret | None
) -> list[HttpProvider]:
    if key is None:
        return []
    return [
        HttpProvider(f"{channel}:{index}", endpoint=url, api_key=key)
        for index, url in enumerate(endpoints, start=1)
    ]


async def build(resources: Resources) -> ServiceApp:
    settings = resources.settings
    assert isinstance(settings, NotifySettings)
    identity = resources.connect("identity")
    verifier, revocations = identity_token_verifier(identity)
    notices, deliveries = NoticeStore(resources.pool), DeliveryStore(resources.pool)
    sms = http_providers("sms", settings.sms_endpoints, settings.sms_api_key)
    push = http_providers("push", settings.push_endpoints, settings.push_api_key)
    providers: dict[Channel, ProviderChain] = {
        Channel.EMAIL: ProviderChain(list[Provider](email_providers(settings))),
        Channel.SMS: ProviderChain(sms),
        Channel.PUSH: ProviderChain(push),
    }
    directory = IdentityContactDirectory(identity)
    contact_changes = follow_contact_changes(identity, lambda ids: kept.forget(ids))
    kept = KeptContacts(
        directory, capacity=settings.kept_contacts, stream=stream_opening(contact_changes)
    )
    retry = RetryPolicy(
        max_attempts=settings.max_attempts,
        base_backoff_seconds=settings.retry_base_seconds,
        max_backoff_seconds=settings.retry_max_seconds,
        lease_seconds=settings.lease_seconds,
    )
    attempts = DeliveryAttempts(
        deliveries,
        directory,
        providers,
        link_base_url=settings.link_base_url,
        operator_emails=settings.operator_emails,
        kept_contacts=kept,
        # Half the batch's time for beginning messages, until 80% for finishing them,
        # the rest for recording what became of them.
        send_window=(retry.attempt_timeout / 2, retry.attempt_timeout * 0.8),
    )
    queue = delivery_queue(resources.pool, attempts, retry, poll_seconds=settings.poll_seconds)
    api = NotifyApi(
        Sending(
            notices,
            rate_limit=RateLimit(
                limit=settings.coalesce_limit, window_seconds=settings.coalesce_window_seconds
            ),
            on_accepted=Lingering(queue.wake, settings.batch_linger_seconds),
        ),
        PersonalView(InboxStore(resources.pool), PreferenceStore(resources.pool)),
        Operations(deliveries, on_requeued=queue.wake),
    )

    async def delivery_lag() -> None:
        metrics.NOTIFY_DELIVERY_LAG.set(await deliveries.oldest_due_age_seconds())
        KEPT_CONTACTS.set(len(kept))

    metrics.for_service(resources.name).on_scrape(delivery_lag)
    closers: list[Closer] = [*(chain.close for chain in providers.values()), identity.close]
    return ServiceApp(
        servicers=[(notify_pb2_grpc.add_NotifyServiceServicer_to_server, api)],
        service_names=[SERVICE.full_name],
        access=method_access(SERVICE, ACCESS),
        verifier=verifier,
        background=[follow_revocations(identity, revocations), contact_changes, queue.run],
        closers=closers,
    )
