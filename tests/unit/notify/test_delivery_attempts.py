"""One delivery attempt, against in-memory fakes of notify's ports."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.notify.domain.kinds import Channel, NoticeKind
from services.notify.domain.notices import ClaimedDelivery, SentDelivery
from services.notify.domain.routing import (
    ContactAddress,
    Recipient,
    RegisteredContacts,
)
from services.notify.use_cases.deliveries import DeliveryAttempts, describe
from services.notify.use_cases.ports import (
    AccountUnknown,
    DeliveryFailed,
    DirectoryUnavailable,
    OutgoingMessage,
)


@dataclass
class FakeStore:
    """The notice and delivery ports: remembers what was recorded."""

    sent: list[tuple[uuid.UUID, SentDelivery]] = field(default_factory=list)
    no_address: list[tuple[uuid.UUID, Channel, str]] = field(default_factory=list)
    forgotten: list[uuid.UUID] = field(default_factory=list)

    async def record_sent(self, claimed: ClaimedDelivery, sent: SentDelivery) -> None:
        self.sent.append((claimed.delivery_id, sent))

    async def record_no_address(
        self, claimed: ClaimedDelivery, *, channel: Channel, account_id: str | None, why: str
    ) -> None:
        self.no_address.append((claimed.delivery_id, channel, why))

    async def forget_secret(self, notice_id: uuid.UUID) -> None:
        self.forgotten.append(notice_id)


@dataclass
class FakeDirectory:
    contacts: dict[str, RegisteredContacts] = field(default_factory=dict)
    down: bool = False

    async def registered_contacts(
        self, recipient: Recipient, *, pending_contact_id: str | None = None
    ) -> RegisteredContacts:
        if self.down:
            raise DirectoryUnavailable("identity is away")
        if recipient.account_id not in self.contacts:
            raise AccountUnknown("no such account")
        return self.contacts[recipient.account_id]


@dataclass
class FakeSender:
    messages: list[OutgoingMessage] = field(default_factory=list)
    configured: bool = True

    async def send(self, message: OutgoingMessage) -> str:
        self.messages.append(message)
        return "fake-mail"


ACCOUNT = str(uuid.uuid4())


def claimed(kind: NoticeKind, recipient: Recipient | None, **params: Any) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=uuid.uuid4(),
        lease_token=uuid.uuid4(),
        notice_id=uuid.uuid4(),
        kind=kind,
        channel=Channel.EMAIL,
        attempts=1,
        recipient=recipient,
        params=params,
    )


def attempts(store: FakeStore, directory: FakeDirectory, mail: FakeSender) -> DeliveryAttempts:
    return DeliveryAttempts(
        store,
        store,
        directory,
        {Channel.EMAIL: mail},
        link_base_url="https://mamoru.test",
        operator_emails=["ops@mamoru.test"],
    )


def primary(address: str) -> RegisteredContacts:
    contact = ContactAddress(str(uuid.uuid4()), Channel.EMAIL, address, True, True)
    return RegisteredContacts(account_id=ACCOUNT, contacts=(contact,))


async def test_a_sign_in_code_goes_to_the_primary_email_and_its_secret_is_forgotten() -> None:
    store, mail = FakeStore(), FakeSender()
    delivery = claimed(NoticeKind.SIGN_IN_CODE, Recipient(account_id=ACCOUNT), secret="424242")

    await attempts(store, FakeDirectory({ACCOUNT: primary("p@example.jp")}), mail).attempt(delivery)

    assert [m.recipients for m in mail.messages] == [("p@example.jp",)]
    assert "424242" in mail.messages[0].text
    assert [(d, s.provider, s.addresses) for d, s in store.sent] == [
        (delivery.delivery_id, "fake-mail", ("p@example.jp",))
    ]
    assert store.forgotten == [delivery.notice_id]


async def test_an_account_identity_does_not_know_is_recorded_as_no_address() -> None:
    store, mail = FakeStore(), FakeSender()
    delivery = claimed(NoticeKind.PASSWORD_CHANGED, Recipient(account_id=ACCOUNT))

    await attempts(store, FakeDirectory(), mail).attempt(delivery)

    assert store.no_address == [(delivery.delivery_id, Channel.EMAIL, "no such account")]
    assert mail.messages == [] and store.sent == []


async def test_an_identity_outage_fails_the_attempt_to_be_retried() -> None:
    store = FakeStore()
    delivery = claimed(NoticeKind.PASSWORD_CHANGED, Recipient(account_id=ACCOUNT))

    with pytest.raises(DirectoryUnavailable) as failed:
        await attempts(store, FakeDirectory(down=True), FakeSender()).attempt(delivery)

    assert describe(failed.value) == "identity is away"
    assert store.sent == [] and store.no_address == []


async def test_a_channel_without_providers_fails_the_attempt() -> None:
    delivery = claimed(NoticeKind.PASSWORD_CHANGED, Recipient(account_id=ACCOUNT))
    directory = FakeDirectory({ACCOUNT: primary("p@example.jp")})

    with pytest.raises(DeliveryFailed, match="no provider is configured for channel EMAIL"):
        await attempts(FakeStore(), directory, FakeSender(configured=False)).attempt(delivery)


async def test_an_operator_alert_goes_to_the_operators_without_asking_identity() -> None:
    store, mail = FakeStore(), FakeSender()
    alert = claimed(
        NoticeKind.OPERATOR_ALERT, None, alert_id="a-1", severity="CRITICAL", summary="s"
    )

    await attempts(store, FakeDirectory(down=True), mail).attempt(alert)

    assert [m.recipients for m in mail.messages] == [("ops@mamoru.test",)]
    assert store.sent[0][1].addresses == ("ops@mamoru.test",)
