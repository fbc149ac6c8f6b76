"""A relay that refuses some recipients or stalls mid-batch: every message still
reaches each of its addresses once, against real PostgreSQL and a real SMTP relay."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import asyncpg
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope

from services.devstack.stack import free_port
from services.notify.clients.channels import ProviderChain, SmtpProvider
from services.notify.domain.kinds import Channel, DeliveryStatus, NoticeKind
from services.notify.domain.notices import NewNotice, RateLimit
from services.notify.domain.routing import ContactAddress, Recipient, RegisteredContacts
from services.notify.jobs import delivery_queue
from services.notify.storage.deliveries import DeliveryStore
from services.notify.storage.notices import NoticeStore
from services.notify.use_cases.deliveries import DeliveryAttempts
from services.notify.use_cases.ports import DeliveryFailed, OutgoingMessage
from services.runtime.queue import RetryPolicy

LIMIT = RateLimit(limit=3, window_seconds=60)


class TroubledRelay:
    """Refuses the recipients in ``refuse`` at RCPT; with ``stall_nth`` it holds the
    nth message's DATA for ``stall_seconds`` and then drops it, as a stuck relay does."""

    def __init__(
        self,
        *,
        refuse: frozenset[str] = frozenset(),
        refuse_for_now: frozenset[str] = frozenset(),
        stall_nth: int = 0,
        stall_seconds: float = 0,
    ) -> None:
        self.received: list[Envelope] = []
        self._refuse = refuse
        self._refuse_for_now = refuse_for_now
        self._stall_nth = stall_nth
        self._stall_seconds = stall_seconds
        self._data = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self._refuse:
            return "550 5.1.1 no such mailbox"
        if address in self._refuse_for_now:
            return "451 4.7.1 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self._data += 1
        if self._data == self._stall_nth:
            await asyncio.sleep(self._stall_seconds)
            return "451 4.3.0 gave up"
        self.received.append(envelope)
        return "250 OK"


def started(relay: TroubledRelay) -> tuple[Controller, int]:
    port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, port


async def test_a_message_is_taken_for_the_recipients_the_relay_accepts() -> None:
    relay = TroubledRelay(refuse=frozenset({"gone@mamoru.test"}))
    controller, port = started(relay)
    provider = SmtpProvider("smtp-main", host="127.0.0.1", port=port, mail_from="n@m.test")
    message = OutgoingMessage(
        recipients=("ops@mamoru.test", "gone@mamoru.test"),
        subject="alert",
        text="a wave",
        html="<p>a wave</p>",
        idempotency_key=str(uuid.uuid4()),
    )
    try:
        (answer,) = await provider.send_many([message])
    finally:
        await provider.close()
        controller.stop()

    assert answer == ("gone@mamoru.test",)
    assert [e.rcpt_tos for e in relay.received] == [["ops@mamoru.test"]]


async def test_a_recipient_refused_for_now_is_left_out_and_the_others_get_it_once() -> None:
    relay = TroubledRelay(refuse_for_now=frozenset({"busy@mamoru.test"}))
    controller, port = started(relay)
    provider = SmtpProvider("smtp-main", host="127.0.0.1", port=port, mail_from="n@m.test")
    message = OutgoingMessage(
        recipients=("ops@mamoru.test", "busy@mamoru.test"),
        subject="alert",
        text="a wave",
        html="<p>a wave</p>",
        idempotency_key=str(uuid.uuid4()),
    )
    try:
        (answer,) = await provider.send_many([message])
        (alone,) = await provider.send_many(
            [dataclasses.replace(message, recipients=("busy@mamoru.test",))]
        )
    finally:
        await provider.close()
        controller.stop()

    assert answer == ("busy@mamoru.test",)
    assert [e.rcpt_tos for e in relay.received] == [["ops@mamoru.test"]]
    # Refused by every recipient, the message fails, and its delivery is tried again.
    assert isinstance(alone, DeliveryFailed)


async def test_a_relay_stalling_mid_batch_sends_no_message_twice(pool: asyncpg.Pool) -> None:
    # The third message of the batch stalls far past the batch's window: it is cut
    # off and retried on its own, while the two the relay took are recorded sent.
    relay = TroubledRelay(stall_nth=3, stall_seconds=60.0)
    controller, port = started(relay)
    provider = SmtpProvider("smtp-main", host="127.0.0.1", port=port, mail_from="n@m.test")
    store, deliveries = NoticeStore(pool), DeliveryStore(pool)
    contacts: dict[str, RegisteredContacts] = {}
    accounts = [str(uuid.uuid4()) for _ in range(3)]
    for number, account in enumerate(accounts):
        address = ContactAddress(
            str(uuid.uuid4()), Channel.EMAIL, f"p{number}@example.jp", True, True
        )
        contacts[account] = RegisteredContacts(account_id=account, contacts=(address,))

    class Directory:
        async def registered_contacts(
            self, recipient: Recipient, *, pending_contact_id: str | None = None
        ) -> RegisteredContacts:
            return contacts[recipient.account_id or ""]

    attempts = DeliveryAttempts(
        deliveries,
        Directory(),
        {Channel.EMAIL: ProviderChain([provider])},
        link_base_url="https://mamoru.test",
        operator_emails=[],
        # Room to begin all three however slow the machine; the third is cut at 5 s.
        send_window=(4.0, 5.0),
    )
    retry = RetryPolicy(
        max_attempts=5,
        base_backoff_seconds=0.01,
        max_backoff_seconds=0.02,
        lease_seconds=30,
        attempt_timeout_seconds=20,
    )
    queue = delivery_queue(pool, attempts, retry)
    for account in accounts:
        notice = NewNotice(
            kind=NoticeKind.PASSWORD_CHANGED,
            caller="identity",
            idempotency_key=str(uuid.uuid4()),
            recipient=Recipient(account_id=account),
            params={"occurred_at": None},
        )
        await store.accept(notice, LIMIT)
    try:
        async with asyncio.timeout(120):
            while len(relay.received) < 3:
                await queue.deliver_due()
                await asyncio.sleep(0.05)
        records = [
            d
            for account in accounts
            for d in await deliveries.of_account(uuid.UUID(account), before_seq=None, limit=10)
            if d.channel is Channel.EMAIL
        ]
    finally:
        await provider.close()
        controller.stop()

    assert sorted(e.rcpt_tos[0] for e in relay.received) == [f"p{n}@example.jp" for n in range(3)]
    assert [d.status for d in records] == [DeliveryStatus.SENT] * 3
    assert max(d.attempts for d in records) >= 2, "the stalled message was cut and sent again"
