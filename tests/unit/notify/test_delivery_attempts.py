"""Delivery attempts, one and a batch at a time, against in-memory fakes of notify's ports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.notify.domain.kinds import Channel, NoticeKind
from services.notify.domain.notices import ClaimedDelivery, DeliveryOutcome, SentDelivery
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
    SendWindow,
    Taken,
)


@dataclass
class FakeStore:
    """The outcome port: remembers what was recorded, batch by batch."""

    sent: list[tuple[uuid.UUID, SentDelivery]] = field(default_factory=list)
    no_address: list[tuple[uuid.UUID, Channel, str]] = field(default_factory=list)
    forgotten: list[uuid.UUID] = field(default_factory=list)
    batches: int = 0

    async def record(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        self.batches += 1
        for outcome in outcomes:
            if outcome.sent is not None:
                self.sent.append((outcome.claimed.delivery_id, outcome.sent))
            else:
                self.no_address.append((outcome.claimed.delivery_id, outcome.channel, outcome.why))
            if outcome.forget_secret:
                self.forgotten.append(outcome.claimed.notice_id)


@dataclass
class FakeDirectory:
    contacts: dict[str, RegisteredContacts] = field(default_factory=dict)
    down: bool = False
    asked: int = 0

    async def registered_contacts(
        self, recipient: Recipient, *, pending_contact_id: str | None = None
    ) -> RegisteredContacts:
        self.asked += 1
        if self.down:
            raise DirectoryUnavailable("identity is away")
        if recipient.account_id not in self.contacts:
            raise AccountUnknown("no such account")
        return self.contacts[recipient.account_id]


@dataclass
class FakeSender:
    """A channel's providers: ``refuse`` fails whole messages for those recipients,
    ``refuse_recipients`` drops only those recipients of a message others take."""

    messages: list[OutgoingMessage] = field(default_factory=list)
    configured: bool = True
    refuse: set[str] = field(default_factory=set)
    refuse_recipients: set[str] = field(default_factory=set)
    calls: int = 0

    async def send_many(
        self, messages: Sequence[OutgoingMessage], *, window: SendWindow | None = None
    ) -> list[Taken | DeliveryFailed]:
        self.calls += 1
        answers: list[Taken | DeliveryFailed] = []
        for message in messages:
            if set(message.recipients) & self.refuse:
                answers.append(DeliveryFailed("451 try again later"))
                continue
            self.messages.append(message)
            refused = tuple(r for r in message.recipients if r in self.refuse_recipients)
            answers.append(Taken("fake-mail", refused=refused))
        return answers


ACCOUNT = str(uuid.uuid4())


def claimed(
    kind: NoticeKind,
    recipient: Recipient | None,
    *,
    channel: Channel = Channel.EMAIL,
    notice_id: uuid.UUID | None = None,
    **params: Any,
) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=uuid.uuid4(),
        lease_token=uuid.uuid4(),
        notice_id=notice_id or uuid.uuid4(),
        kind=kind,
        channel=channel,
        attempts=1,
        recipient=recipient,
        params=params,
    )


def attempts(
    store: FakeStore,
    directory: FakeDirectory,
    mail: FakeSender,
    operators: Sequence[str] = ("ops@mamoru.test",),
) -> DeliveryAttempts:
    return DeliveryAttempts(
        store,
        directory,
        {Channel.EMAIL: mail},
        link_base_url="https://mamoru.test",
        operator_emails=operators,
    )


def primary(address: str, account_id: str = ACCOUNT) -> RegisteredContacts:
    contact = ContactAddress(str(uuid.uuid4()), Channel.EMAIL, address, True, True)
    return RegisteredContacts(account_id=account_id, contacts=(contact,))


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


async def test_a_payment_notice_asks_identity_once_for_its_three_deliveries() -> None:
    store, mail = FakeStore(), FakeSender()
    directory = FakeDirectory({ACCOUNT: primary("p@example.jp")})
    notice = uuid.uuid4()
    payer = Recipient(account_id=ACCOUNT)
    money = {"amount_minor": 480, "currency": "JPY", "counterparty": "cafe", "movement_id": "m"}
    batch = [
        claimed(NoticeKind.PAYMENT, payer, channel=channel, notice_id=notice, **money)
        for channel in (Channel.EMAIL, Channel.PUSH, Channel.INBOX)
    ]

    outcomes = await attempts(store, directory, mail).attempt_batch(batch)

    assert outcomes == [None, None, None]
    assert directory.asked == 1
    assert store.batches == 1
    assert [m.recipients for m in mail.messages] == [("p@example.jp",)]
    assert {d for d, _ in store.sent} == {batch[0].delivery_id, batch[2].delivery_id}
    assert store.no_address == [
        (batch[1].delivery_id, Channel.PUSH, "no verified address on this channel at send time")
    ]


async def test_a_refused_message_fails_its_own_delivery_only() -> None:
    store, mail = FakeStore(), FakeSender(refuse={"refused@example.jp"})
    other = str(uuid.uuid4())
    directory = FakeDirectory(
        {ACCOUNT: primary("refused@example.jp"), other: primary("ok@example.jp", other)}
    )
    batch = [
        claimed(NoticeKind.PASSWORD_CHANGED, Recipient(account_id=ACCOUNT)),
        claimed(NoticeKind.PASSWORD_CHANGED, Recipient(account_id=other)),
    ]

    failed, sent = await attempts(store, directory, mail).attempt_batch(batch)

    assert isinstance(failed, DeliveryFailed) and sent is None
    assert mail.calls == 1, "the batch's emails went to the providers together"
    assert [m.recipients for m in mail.messages] == [("ok@example.jp",)]
    assert [d for d, _ in store.sent] == [batch[1].delivery_id]


async def test_an_identity_outage_fails_only_the_deliveries_that_needed_it() -> None:
    store, mail = FakeStore(), FakeSender()
    batch = [
        claimed(NoticeKind.PASSWORD_CHANGED, Recipient(account_id=ACCOUNT)),
        claimed(NoticeKind.OPERATOR_ALERT, None, alert_id="a-1", severity="CRITICAL", summary="s"),
    ]

    waiting, alerted = await attempts(store, FakeDirectory(down=True), mail).attempt_batch(batch)

    assert isinstance(waiting, DirectoryUnavailable) and alerted is None
    assert [m.recipients for m in mail.messages] == [("ops@mamoru.test",)]


async def test_a_message_some_recipients_refused_is_recorded_sent_to_the_others_only() -> None:
    store = FakeStore()
    mail = FakeSender(refuse_recipients={"gone@mamoru.test"})
    alert = claimed(
        NoticeKind.OPERATOR_ALERT, None, alert_id="a-1", severity="CRITICAL", summary="s"
    )
    operators = ("ops@mamoru.test", "gone@mamoru.test")

    outcomes = await attempts(store, FakeDirectory(), mail, operators).attempt_batch([alert])

    # Not retried: a retry would repeat the message to the operator who has it.
    assert outcomes == [None]
    assert [(s.provider, s.addresses) for _, s in store.sent] == [
        ("fake-mail", ("ops@mamoru.test",))
    ]
