"""What notify's use cases need from outside, as Protocols: its storage, identity's
contact directory and the channel providers (the adapters live in storage/ and clients/)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.notify.domain.kinds import Channel, NoticeKind
from services.notify.domain.notices import (
    AcceptedNotice,
    ClaimedDelivery,
    DeliveryRecord,
    DeliveryStatRow,
    InboxRecord,
    NewNotice,
    RateLimit,
    SentDelivery,
)
from services.notify.domain.routing import Recipient, RegisteredContacts


class Notices(Protocol):
    async def accept(self, notice: NewNotice, rate_limit: RateLimit) -> AcceptedNotice: ...


class Secrets(Protocol):
    async def forget_secret(self, notice_id: uuid.UUID) -> None:
        """A code or link token is kept only until it has been handed to its channel."""
        ...


class Outcomes(Protocol):
    """Where an attempt records how a delivery went (failures are the queue's)."""

    async def record_sent(self, claimed: ClaimedDelivery, sent: SentDelivery) -> None: ...

    async def record_no_address(
        self, claimed: ClaimedDelivery, *, channel: Channel, account_id: str | None, why: str
    ) -> None: ...


class DeliveryLog(Protocol):
    async def of_account(
        self, account_id: uuid.UUID, *, before_seq: int | None, limit: int
    ) -> list[DeliveryRecord]: ...

    async def dead_letters(self, *, before_seq: int | None, limit: int) -> list[DeliveryRecord]: ...

    async def get(self, delivery_id: uuid.UUID) -> DeliveryRecord | None: ...

    async def retry_dead(self, delivery_id: uuid.UUID) -> DeliveryRecord | None: ...

    async def stats(self, since: datetime, until: datetime) -> list[DeliveryStatRow]: ...


class Inbox(Protocol):
    async def items(
        self, account_id: uuid.UUID, *, unread_only: bool, before_seq: int | None, limit: int
    ) -> list[InboxRecord]: ...

    async def mark_read(self, account_id: uuid.UUID, notice_ids: Sequence[uuid.UUID]) -> int: ...


class Preferences(Protocol):
    async def muted_kinds(self, account_id: uuid.UUID) -> list[NoticeKind]: ...

    async def set_muted_kinds(
        self, account_id: uuid.UUID, kinds: Sequence[NoticeKind]
    ) -> list[NoticeKind]: ...


class AccountUnknown(Exception):
    """Identity has no such account (never created, or closed): nothing can be sent."""


class DirectoryUnavailable(Exception):
    """Identity could not answer now; the delivery waits and retries."""


class ContactDirectory(Protocol):
    """An account's verified contacts, asked at send time; raises ``AccountUnknown``
    or ``DirectoryUnavailable``."""

    async def registered_contacts(
        self, recipient: Recipient, *, pending_contact_id: str | None = None
    ) -> RegisteredContacts: ...


class DeliveryFailed(Exception):
    """Every provider of the channel refused or failed; the delivery is retried later."""


@dataclass(frozen=True)
class OutgoingMessage:
    """A rendered message for some addresses of one channel."""

    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str
    # Providers that deduplicate (HTTP adapters) receive it, so a retry after a
    # lost answer does not send twice.
    idempotency_key: str


class Sender(Protocol):
    """The providers of one channel; ``send`` answers the name of the one that took
    the message or raises ``DeliveryFailed``."""

    @property
    def configured(self) -> bool: ...

    async def send(self, message: OutgoingMessage) -> str: ...
