"""Delivering one claimed delivery: resolve the address at send time, render,
send through the channel's providers, record the outcome.

The delivery job (``jobs.py``) claims due deliveries from the runtime's leased
queue and hands each to ``attempt``; an attempt that raises is retried by the
queue with backoff, and after the last attempt the delivery is dead-lettered
for operators (``failed`` logs and counts each).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from services.notify.domain.kinds import CODE_KINDS, Channel, NoticeKind
from services.notify.domain.notices import ClaimedDelivery, SentDelivery
from services.notify.domain.routing import Language, destination
from services.notify.domain.templates import RenderedNotice, render
from services.notify.use_cases.ports import (
    AccountUnknown,
    ContactDirectory,
    DeliveryFailed,
    DirectoryUnavailable,
    Outcomes,
    OutgoingMessage,
    Secrets,
    Sender,
)
from services.runtime import metrics

log = structlog.get_logger(__name__)

# Failures that are expected while a provider or identity is away: recorded
# and retried without a traceback.
EXPECTED_FAILURES = (DeliveryFailed, DirectoryUnavailable, TimeoutError)


def describe(error: BaseException) -> str:
    """The error text a failed attempt records."""
    if isinstance(error, EXPECTED_FAILURES):
        return str(error) or type(error).__name__
    return f"{type(error).__name__}: {error}"


class DeliveryAttempts:
    """One attempt of a claimed delivery; raises when it is to be retried."""

    def __init__(
        self,
        secrets: Secrets,
        outcomes: Outcomes,
        directory: ContactDirectory,
        senders: Mapping[Channel, Sender],
        *,
        link_base_url: str,
        operator_emails: Sequence[str],
    ) -> None:
        self._secrets = secrets
        self._outcomes = outcomes
        self._directory = directory
        self._senders = senders
        self._link_base_url = link_base_url
        self._operator_emails = tuple(operator_emails)

    async def attempt(self, claimed: ClaimedDelivery) -> None:
        try:
            await self._deliver(claimed)
        except EXPECTED_FAILURES:
            raise
        except Exception:
            log.exception("notify.delivery_error", delivery_id=str(claimed.delivery_id))
            raise

    def failed(self, claimed: ClaimedDelivery, error: str, dead: bool, delay: float) -> None:
        """The queue recorded a failed attempt: count it and say so."""
        (metrics.NOTIFY_DEAD_LETTERS if dead else metrics.NOTIFY_RETRIES).inc()
        log.warning(
            "notify.delivery_dead" if dead else "notify.delivery_failed",
            delivery_id=str(claimed.delivery_id),
            kind=claimed.kind.name,
            attempt=claimed.attempts,
            retry_in_seconds=None if dead else round(delay, 3),
            error=error,
        )

    async def _deliver(self, claimed: ClaimedDelivery) -> None:
        if claimed.kind is NoticeKind.OPERATOR_ALERT:
            rendered = self._render(claimed, Language.EN, None)
            await self._send(claimed, Channel.EMAIL, self._operator_emails, rendered, None)
            return
        if claimed.recipient is None:
            await self._outcomes.record_no_address(
                claimed, channel=claimed.channel, account_id=None, why="the notice has no account"
            )
            return
        pending = claimed.params.get("pending_contact_id") or None
        try:
            registered = await self._directory.registered_contacts(
                claimed.recipient, pending_contact_id=pending
            )
        except AccountUnknown as unknown:
            await self._outcomes.record_no_address(
                claimed, channel=claimed.channel, account_id=None, why=str(unknown)
            )
            return
        target = destination(claimed.kind, claimed.channel, registered, pending_contact_id=pending)
        if not target.addresses:
            await self._outcomes.record_no_address(
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
        inbox = channel is Channel.INBOX
        provider = (
            "inbox" if inbox else await self._hand_over(claimed, channel, addresses, rendered)
        )
        await self._outcomes.record_sent(
            claimed,
            SentDelivery(
                channel=channel,
                account_id=account_id,
                addresses=tuple(addresses),
                provider=provider,
                # The inbox keeps the rendered text; other channels have handed it on.
                subject=rendered.subject if inbox else "",
                body=rendered.text if inbox else "",
            ),
        )
        if inbox:
            return
        if claimed.kind in CODE_KINDS:
            await self._secrets.forget_secret(claimed.notice_id)
        log.info(
            "notify.delivered",
            delivery_id=str(claimed.delivery_id),
            kind=claimed.kind.name,
            channel=channel.name,
            provider=provider,
            attempt=claimed.attempts,
        )

    async def _hand_over(
        self,
        claimed: ClaimedDelivery,
        channel: Channel,
        addresses: Sequence[str],
        rendered: RenderedNotice,
    ) -> str:
        """The name of the provider that took the message."""
        sender = self._senders.get(channel)
        if sender is None or not sender.configured:
            raise DeliveryFailed(f"no provider is configured for channel {channel.name}")
        return await sender.send(
            OutgoingMessage(
                recipients=tuple(addresses),
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                idempotency_key=str(claimed.delivery_id),
            )
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
