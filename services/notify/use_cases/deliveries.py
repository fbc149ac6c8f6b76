"""Delivering a batch of claimed deliveries: resolve each address at send time,
render, hand the messages of each channel to its providers together, record the
outcomes.

The delivery job (``jobs.py``) claims due deliveries from the runtime's leased
queue a batch at a time and hands the batch to ``attempt_batch``, which answers
per delivery: None once its outcome (sent, no address) is recorded, or the error
for which the queue retries that delivery alone, with backoff; after the last
attempt the delivery is dead-lettered for operators (``failed`` logs and counts
each). The batch's outcomes are recorded in one statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from services.notify.domain.kinds import CODE_KINDS, Channel, NoticeKind, may_use_kept_contacts
from services.notify.domain.notices import ClaimedDelivery, DeliveryOutcome, SentDelivery
from services.notify.domain.routing import Language, RegisteredContacts, destination
from services.notify.domain.templates import RenderedNotice, render
from services.notify.use_cases.ports import (
    AccountUnknown,
    ContactDirectory,
    DeliveryFailed,
    DirectoryUnavailable,
    Outcomes,
    OutgoingMessage,
    Sender,
    SendWindow,
    Taken,
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


@dataclass(frozen=True)
class _Handover:
    """A delivery whose message is to be handed to a channel's providers."""

    index: int
    channel: Channel
    addresses: tuple[str, ...]
    rendered: RenderedNotice
    account_id: str | None


# What the look-up of one recipient came to.
_Looked = RegisteredContacts | AccountUnknown | Exception
# Which look-up a delivery needs: the recipient, the pending contact (or ""), and
# whether the contacts notify kept may answer.
_Key = tuple[str, str, bool]


class DeliveryAttempts:
    """Attempts of claimed deliveries, a batch at a time."""

    def __init__(
        self,
        outcomes: Outcomes,
        directory: ContactDirectory,
        senders: Mapping[Channel, Sender],
        *,
        link_base_url: str,
        operator_emails: Sequence[str],
        kept_contacts: ContactDirectory | None = None,
        send_window: tuple[float, float] | None = None,
    ) -> None:
        self._outcomes = outcomes
        self._directory = directory
        self._kept = directory if kept_contacts is None else kept_contacts
        self._senders = senders
        self._link_base_url = link_base_url
        self._operator_emails = tuple(operator_emails)
        # Seconds after a batch starts: no message is begun after the first, and one
        # still being handed on at the second is cut off, so a slow relay cannot hold
        # the batch past the queue's timeout (which would send its messages again).
        self._send_window = send_window

    async def attempt(self, claimed: ClaimedDelivery) -> None:
        """One delivery on its own; raises when it is to be retried."""
        (outcome,) = await self.attempt_batch([claimed])
        if outcome is not None:
            raise outcome

    async def attempt_batch(self, batch: Sequence[ClaimedDelivery]) -> list[BaseException | None]:
        """Per delivery, None once its outcome is recorded, or the error to retry it for."""
        window = None if self._send_window is None else SendWindow.from_now(*self._send_window)
        results: list[BaseException | None] = [None] * len(batch)
        recorded: list[DeliveryOutcome | None] = [None] * len(batch)
        contacts = await self._look_up(batch)
        handovers: list[_Handover] = []
        for index, claimed in enumerate(batch):
            try:
                planned = self._plan(index, claimed, contacts)
            except Exception as error:
                results[index] = self._failure(claimed, error)
                continue
            if isinstance(planned, _Handover):
                handovers.append(planned)
            else:
                recorded[index] = planned
        for handover, outcome in await self._hand_over(batch, handovers, window):
            claimed = batch[handover.index]
            if isinstance(outcome, BaseException):
                results[handover.index] = self._failure(claimed, outcome)
                continue
            if outcome.refused:
                # The others have it; sending again would repeat it to them. The
                # refused addresses are left out of what is recorded as reached.
                log.warning(
                    "notify.recipients_refused",
                    delivery_id=str(claimed.delivery_id),
                    provider=outcome.provider,
                    refused=len(outcome.refused),
                    reached=len(handover.addresses) - len(outcome.refused),
                )
            recorded[handover.index] = DeliveryOutcome(
                claimed,
                handover.channel,
                handover.account_id,
                sent=SentDelivery(
                    channel=handover.channel,
                    account_id=handover.account_id,
                    addresses=tuple(a for a in handover.addresses if a not in outcome.refused),
                    provider=outcome.provider,
                ),
                forget_secret=claimed.kind in CODE_KINDS,
            )
        await self._outcomes.record([o for o in recorded if o is not None])
        for done in recorded:
            if done is not None and done.sent is not None and done.channel is not Channel.INBOX:
                log.info(
                    "notify.delivered",
                    delivery_id=str(done.claimed.delivery_id),
                    kind=done.claimed.kind.name,
                    channel=done.channel.name,
                    provider=done.sent.provider,
                    attempt=done.claimed.attempts,
                )
        return results

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

    @staticmethod
    def _failure(claimed: ClaimedDelivery, error: BaseException) -> BaseException:
        if not isinstance(error, EXPECTED_FAILURES):
            log.error(
                "notify.delivery_error",
                delivery_id=str(claimed.delivery_id),
                exc_info=error,
            )
        return error

    async def _look_up(
        self, batch: Sequence[ClaimedDelivery]
    ) -> dict[tuple[str, str, bool], _Looked]:
        """Each recipient's contacts, asked once per batch (a notice's deliveries share them)."""
        wanted = {_contacts_key(claimed) for claimed in batch if _needs_contacts(claimed)}
        keys = [key for key in wanted if key is not None]

        async def one(key: _Key) -> _Looked:
            claimed = next(c for c in batch if _contacts_key(c) == key)
            assert claimed.recipient is not None
            directory = self._kept if key[2] else self._directory
            try:
                return await directory.registered_contacts(
                    claimed.recipient, pending_contact_id=key[1] or None
                )
            except Exception as error:
                return error

        answers = await asyncio.gather(*(one(key) for key in keys))
        return dict(zip(keys, answers, strict=True))

    def _plan(
        self,
        index: int,
        claimed: ClaimedDelivery,
        contacts: Mapping[_Key, _Looked],
    ) -> _Handover | DeliveryOutcome:
        if claimed.kind is NoticeKind.OPERATOR_ALERT:
            rendered = self._render(claimed, Language.EN, None)
            return _Handover(index, Channel.EMAIL, self._operator_emails, rendered, None)
        key = _contacts_key(claimed)
        if key is None:
            return DeliveryOutcome(claimed, claimed.channel, None, why="the notice has no account")
        registered = contacts[key]
        if isinstance(registered, AccountUnknown):
            return DeliveryOutcome(claimed, claimed.channel, None, why=str(registered))
        if isinstance(registered, Exception):
            raise registered
        target = destination(
            claimed.kind, claimed.channel, registered, pending_contact_id=key[1] or None
        )
        if not target.addresses:
            return DeliveryOutcome(
                claimed,
                target.channel,
                registered.account_id,
                why="no verified address on this channel at send time",
            )
        rendered = self._render(claimed, registered.language, registered.display_name)
        if target.channel is Channel.INBOX:
            # The inbox keeps the rendered text; other channels hand it on.
            sent = SentDelivery(
                channel=Channel.INBOX,
                account_id=registered.account_id,
                addresses=target.addresses,
                provider="inbox",
                subject=rendered.subject,
                body=rendered.text,
            )
            return DeliveryOutcome(claimed, Channel.INBOX, registered.account_id, sent=sent)
        return _Handover(index, target.channel, target.addresses, rendered, registered.account_id)

    async def _hand_over(
        self,
        batch: Sequence[ClaimedDelivery],
        handovers: Sequence[_Handover],
        window: SendWindow | None,
    ) -> list[tuple[_Handover, Taken | BaseException]]:
        """Each channel's messages to its providers together, the channels at once."""
        by_channel: dict[Channel, list[_Handover]] = {}
        for handover in handovers:
            by_channel.setdefault(handover.channel, []).append(handover)

        async def channel_batch(
            channel: Channel, items: list[_Handover]
        ) -> list[tuple[_Handover, Taken | BaseException]]:
            sender = self._senders.get(channel)
            if sender is None or not sender.configured:
                missing = DeliveryFailed(f"no provider is configured for channel {channel.name}")
                return [(item, missing) for item in items]
            messages = [
                OutgoingMessage(
                    recipients=item.addresses,
                    subject=item.rendered.subject,
                    text=item.rendered.text,
                    html=item.rendered.html,
                    idempotency_key=str(batch[item.index].delivery_id),
                )
                for item in items
            ]
            outcomes = await sender.send_many(messages, window=window)
            return list(zip(items, outcomes, strict=True))

        done = await asyncio.gather(
            *(channel_batch(channel, items) for channel, items in by_channel.items())
        )
        return [pair for pairs in done for pair in pairs]

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


def _needs_contacts(claimed: ClaimedDelivery) -> bool:
    return claimed.kind is not NoticeKind.OPERATOR_ALERT and claimed.recipient is not None


def _contacts_key(claimed: ClaimedDelivery) -> _Key | None:
    if claimed.recipient is None:
        return None
    pending = str(claimed.params.get("pending_contact_id") or "")
    return (claimed.recipient.key, pending, may_use_kept_contacts(claimed.kind) and not pending)
