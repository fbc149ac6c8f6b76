"""What notify's use cases need from outside, as Protocols: its storage, identity's
contact directory and the channel providers (the adapters live in storage/ and clients/)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.notify.domain.kinds import NoticeKind
from services.notify.domain.notices import (
    AcceptedNotice,
    DeliveryOutcome,
    DeliveryRecord,
    DeliveryStatRow,
    InboxRecord,
    NewNotice,
    RateLimit,
)
from services.notify.domain.routing import Recipient, RegisteredContacts


class Notices(Protocol):
    async def accept(self, notice: NewNotice, rate_limit: RateLimit) -> AcceptedNotice: ...

    async def accept_many(
        self, notices: Sequence[NewNotice], rate_limit: RateLimit
    ) -> list[AcceptedNotice]: ...


class Outcomes(Protocol):
    """Where a batch of attempts records how its deliveries went, in one statement
    (failures are the queue's)."""

    async def record(self, outcomes: Sequence[DeliveryOutcome]) -> None: ...


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


@dataclass(frozen=True)
class SendWindow:
    """When the messages of one batch may be handed on (``time.monotonic`` seconds).

    None is begun after ``begin_by``; one still being handed on at ``end_by`` is
    cut off and fails (it may have arrived, so its retry may repeat it). The queue
    retries every delivery of a batch that overruns its timeout, those already sent
    too, so ``end_by`` sits inside that timeout.
    """

    begin_by: float
    end_by: float

    @classmethod
    def from_now(cls, begin_within: float, end_within: float) -> SendWindow:
        now = time.monotonic()
        return cls(begin_by=now + begin_within, end_by=now + end_within)

    def closed_to_new_messages(self) -> bool:
        return time.monotonic() >= self.begin_by

    def seconds_left(self) -> float:
        return max(0.0, self.end_by - time.monotonic())


@dataclass(frozen=True)
class Taken:
    """A provider took a message: its name, and the recipients it refused (the
    message reached the others, so it is not sent again)."""

    provider: str
    refused: tuple[str, ...] = ()


class Sender(Protocol):
    """The providers of one channel; ``send_many`` answers, per message, ``Taken``
    or the ``DeliveryFailed`` saying why no provider took it, within ``window``."""

    @property
    def configured(self) -> bool: ...

    async def send_many(
        self, messages: Sequence[OutgoingMessage], *, window: SendWindow | None = None
    ) -> list[Taken | DeliveryFailed]: ...
