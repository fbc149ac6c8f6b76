"""The delivery worker: claims due deliveries, resolves the address at send
time, renders, sends through the channel's providers, and records the outcome.

Claims use ``FOR UPDATE SKIP LOCKED`` with a lease, so several replicas share
the work and a delivery whose worker died is taken over when its lease ends.
A failed attempt is retried with exponential backoff; after the last attempt
the delivery is dead-lettered for operators.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from services.notify.channels import DeliveryFailed, OutgoingMessage, ProviderChain
from services.notify.contacts import AccountUnknown, ContactDirectory, DirectoryUnavailable
from services.notify.domain.kinds import CODE_KINDS, Channel, NoticeKind
from services.notify.domain.routing import Language, destination
from services.notify.domain.templates import RenderedNotice, render
from services.notify.storage import ClaimedDelivery, NoticeStore
from services.runtime import metrics
from services.runtime.outages import OutageLog
from services.runtime.outbox import backoff_seconds

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 2.0
    max_seconds: float = 900.0
    lease_seconds: float = 60.0


class DeliveryWorker:
    """Delivers what ``NoticeStore`` holds; ``run`` is the service's background job."""

    def __init__(
        self,
        store: NoticeStore,
        directory: ContactDirectory,
        providers: Mapping[Channel, ProviderChain],
        *,
        link_base_url: str,
        operator_emails: Sequence[str],
        retry: RetryPolicy,
        poll_seconds: float = 1.0,
        batch_size: int = 50,
    ) -> None:
        self._store = store
        self._directory = directory
        self._providers = providers
        self._link_base_url = link_base_url
        self._operator_emails = tuple(operator_emails)
        self._retry = retry
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A notice was just accepted: look now instead of at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        outage = OutageLog(log, "notify.worker_error")
        while not stop.is_set():
            self._wake.clear()
            try:
                if await self.deliver_due() >= self._batch_size:
                    outage.ok()
                    continue
                next_due = await self._store.seconds_until_next_due()
            except Exception as error:
                # A worker that dies quietly stops every notice; keep going.
                outage.failed(error)
                next_due = None
            else:
                outage.ok()
            wait = self._poll_seconds if next_due is None else min(next_due, self._poll_seconds)
            await _wait_for_any(stop, self._wake, within=max(wait, 0.02))

    async def deliver_due(self) -> int:
        """One pass: claim a batch of due deliveries and attempt each once."""
        claimed = await self._store.claim_due(
            limit=self._batch_size, lease_seconds=self._retry.lease_seconds
        )
        if claimed:
            await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        return len(claimed)

    async def _attempt(self, claimed: ClaimedDelivery) -> None:
        try:
            async with asyncio.timeout(self._retry.lease_seconds / 2):
                await self._deliver(claimed)
        except (DeliveryFailed, DirectoryUnavailable, TimeoutError) as error:
            await self._failed(claimed, str(error) or type(error).__name__)
        except Exception as error:
            log.exception("notify.delivery_error", delivery_id=str(claimed.delivery_id))
            await self._failed(claimed, f"{type(error).__name__}: {error}")

    async def _deliver(self, claimed: ClaimedDelivery) -> None:
        if claimed.kind is NoticeKind.OPERATOR_ALERT:
            rendered = self._render(claimed, Language.EN, None)
            await self._send(claimed, Channel.EMAIL, self._operator_emails, rendered, None)
            return
        if claimed.recipient is None:
            await self._store.record_no_address(
                claimed, channel=claimed.channel, account_id=None, why="the notice has no account"
            )
            return
        pending = claimed.params.get("pending_contact_id") or None
        try:
            registered = await self._directory.registered_contacts(
                claimed.recipient, pending_contact_id=pending
            )
        except AccountUnknown as unknown:
            await self._store.record_no_address(
                claimed, channel=claimed.channel, account_id=None, why=str(unknown)
            )
            return
        target = destination(claimed.kind, claimed.channel, registered, pending_contact_id=pending)
        if not target.addresses:
            await self._store.record_no_address(
                claimed,
                channel=target.channel,
                account_id=registered.account_id,
                why="no verified address on this channel at send time",
            )
            return
        rendered = self._render(claimed, registered.language, registered.display_name)
        await self._send(claimed, target.channel, target.addresses, rendered, registered.account_id)

    async def _send(
        self,
        claimed: ClaimedDelivery,
        channel: Channel,
        addresses: Sequence[str],
        rendered: RenderedNotice,
        account_id: str | None,
    ) -> None:
        if channel is Channel.INBOX:
            await self._store.record_sent(
                claimed,
                channel=channel,
                account_id=account_id,
                addresses=addresses,
                provider="inbox",
                subject=rendered.subject,
                body=rendered.text,
            )
            return
        chain = self._providers.get(channel)
        if chain is None or not chain.providers:
            raise DeliveryFailed(f"no provider is configured for channel {channel.name}")
        provider = await chain.send(
            OutgoingMessage(
                recipients=tuple(addresses),
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                idempotency_key=str(claimed.delivery_id),
            )
        )
        await self._store.record_sent(
            claimed, channel=channel, account_id=account_id, addresses=addresses, provider=provider
        )
        if claimed.kind in CODE_KINDS:
            await self._store.forget_secret(claimed.notice_id)
        log.info(
            "notify.delivered",
            delivery_id=str(claimed.delivery_id),
            kind=claimed.kind.name,
            channel=channel.name,
            provider=provider,
            attempt=claimed.attempts,
        )

    def _render(
        self, claimed: ClaimedDelivery, language: Language, display_name: str | None
    ) -> RenderedNotice:
        return render(
            claimed.kind,
            claimed.params,
            language=language,
            link_base_url=self._link_base_url,
            notice_id=str(claimed.notice_id),
            display_name=display_name,
        )

    async def _failed(self, claimed: ClaimedDelivery, error: str) -> None:
        dead = claimed.attempts >= self._retry.max_attempts
        delay = backoff_seconds(
            claimed.attempts, base=self._retry.base_seconds, cap=self._retry.max_seconds
        )
        await self._store.record_failure(claimed, error=error, dead=dead, retry_in_seconds=delay)
        (metrics.NOTIFY_DEAD_LETTERS if dead else metrics.NOTIFY_RETRIES).inc()
        event = "notify.delivery_dead" if dead else "notify.delivery_failed"
        log.warning(
            event,
            delivery_id=str(claimed.delivery_id),
            kind=claimed.kind.name,
            attempt=claimed.attempts,
            retry_in_seconds=None if dead else round(delay, 3),
            error=error,
        )


async def _wait_for_any(*events: asyncio.Event, within: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
