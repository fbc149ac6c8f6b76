"""Notices and deliveries as notify keeps them, and the rule that decides, when a
notice is accepted, whether it is sent, coalesced into recent ones, or muted.

The rule is pure: storage gathers the facts it needs (how many recent notices of
the kind the recipient had, whether the person muted the kind) inside the
accepting transaction and stores what ``decide`` answers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.notify.domain.kinds import (
    COALESCED_KINDS,
    MUTABLE_KINDS,
    Channel,
    DeliveryStatus,
    NoticeKind,
    planned_channels,
)
from services.notify.domain.routing import Recipient


@dataclass(frozen=True)
class NewNotice:
    """A notice as accepted from a caller."""

    kind: NoticeKind
    caller: str
    idempotency_key: str
    recipient: Recipient | None
    params: dict[str, Any]


@dataclass(frozen=True)
class AcceptedNotice:
    notice_id: uuid.UUID
    coalesced: bool


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` notices of a coalesced kind per recipient per window."""

    limit: int
    window_seconds: float


@dataclass(frozen=True)
class Acceptance:
    """What accepting a notice stores: whether it is coalesced, and one delivery
    per channel in ``channels``, each starting in ``status``."""

    coalesced: bool
    status: DeliveryStatus
    channels: tuple[Channel, ...]


def counts_recent(notice: NewNotice) -> bool:
    """Whether the decision needs the recipient's recent notices of the kind."""
    return notice.recipient is not None and notice.kind in COALESCED_KINDS


def may_be_muted(notice: NewNotice) -> bool:
    """Whether the decision needs the person's muted kinds."""
    recipient = notice.recipient
    return recipient is not None and bool(recipient.account_id) and notice.kind in MUTABLE_KINDS


def decide(notice: NewNotice, *, recent: int, muted: bool, rate_limit: RateLimit) -> Acceptance:
    """Coalesce a kind anyone can trigger once the recipient had ``rate_limit.limit``
    of it in the window (``recent`` counts those not coalesced); otherwise mute a
    mutable kind the person muted; otherwise deliver on every planned channel."""
    coalesced = counts_recent(notice) and recent >= rate_limit.limit
    status = DeliveryStatus.PENDING
    if coalesced:
        status = DeliveryStatus.COALESCED
    elif muted and may_be_muted(notice):
        status = DeliveryStatus.MUTED
    return Acceptance(coalesced=coalesced, status=status, channels=planned_channels(notice.kind))


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery held for one attempt, with its notice."""

    delivery_id: uuid.UUID
    lease_token: uuid.UUID
    notice_id: uuid.UUID
    kind: NoticeKind
    channel: Channel
    attempts: int
    recipient: Recipient | None
    params: dict[str, Any]


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery as the delivery log shows it."""

    seq: int
    delivery_id: uuid.UUID
    notice_id: uuid.UUID
    kind: NoticeKind
    channel: Channel
    address: str
    status: DeliveryStatus
    attempts: int
    provider: str
    last_error: str
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class InboxRecord:
    seq: int
    notice_id: uuid.UUID
    kind: NoticeKind
    subject: str
    body: str
    created_at: datetime
    read_at: datetime | None


@dataclass(frozen=True)
class DeliveryStatRow:
    kind: NoticeKind
    channel: Channel
    sent: int
    failed: int
    dead: int
    coalesced: int


@dataclass(frozen=True)
class SentDelivery:
    """How a delivery went out: the channel used, resolved addresses, the provider."""

    channel: Channel
    account_id: str | None
    addresses: tuple[str, ...]
    provider: str
    subject: str = ""
    body: str = ""


@dataclass(frozen=True)
class DeliveryOutcome:
    """How an attempt ended that the delivery job records itself: ``sent`` (how it
    went out) or, without it, no address (``why``). ``forget_secret``: the notice's
    code or link token has been handed on and is to be dropped."""

    claimed: ClaimedDelivery
    channel: Channel
    account_id: str | None
    sent: SentDelivery | None = None
    why: str = ""
    forget_secret: bool = False

    @property
    def status(self) -> DeliveryStatus:
        return DeliveryStatus.SENT if self.sent is not None else DeliveryStatus.NO_ADDRESS
