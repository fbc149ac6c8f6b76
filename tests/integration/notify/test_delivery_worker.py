"""The delivery worker against real PostgreSQL, a real SMTP server and a real
HTTP provider, with an in-memory contact directory standing in for identity's
answers (the e2e tests use the real identity)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope

from services.devstack.smtp import LocalSmtpServer
from services.devstack.stack import free_port
from services.notify.clients.channels import HttpProvider, ProviderChain, SmtpProvider
from services.notify.domain.kinds import Channel, DeliveryStatus, NoticeKind
from services.notify.domain.notices import (
    ClaimedDelivery,
    DeliveryRecord,
    NewNotice,
    RateLimit,
)
from services.notify.domain.routing import (
    ContactAddress,
    Language,
    Recipient,
    RegisteredContacts,
)
from services.notify.jobs import delivery_queue
from services.notify.storage.deliveries import DeliveryStore
from services.notify.storage.inbox import InboxStore
from services.notify.storage.notices import NoticeStore
from services.notify.use_cases.deliveries import DeliveryAttempts
from services.notify.use_cases.ports import AccountUnknown, DirectoryUnavailable
from services.runtime.config import Secret
from services.runtime.queue import LeasedQueue, RetryPolicy

BASE_URL = "https://mamoru.test"
FAST_RETRY = RetryPolicy(
    max_attempts=4, base_backoff_seconds=0.01, max_backoff_seconds=0.02, lease_seconds=30
)
LIMIT = RateLimit(limit=3, window_seconds=60)


@dataclass
class InMemoryDirectory:
    """Identity's answers for a few accounts; ``down`` answers like an outage."""

    accounts: dict[str, RegisteredContacts] = field(default_factory=dict)
    down: bool = False
    asked: list[str] = field(default_factory=list)

    async def registered_contacts(
        self, recipient: Recipient, *, pending_contact_id: str | None = None
    ) -> RegisteredContacts:
        self.asked.append(recipient.key)
        if self.down:
            raise DirectoryUnavailable("identity is unreachable")
        key = recipient.account_id or recipient.payer_id or ""
        if key not in self.accounts:
            raise AccountUnknown("no such account")
        return self.accounts[key]


def email(address: str, *, primary: bool = False, verified: bool = True) -> ContactAddress:
    return ContactAddress(str(uuid.uuid4()), Channel.EMAIL, address, verified, primary)


def phone(number: str, *, verified: bool = True) -> ContactAddress:
    return ContactAddress(str(uuid.uuid4()), Channel.SMS, number, verified, False)


@dataclass
class Rig:
    store: NoticeStore
    deliveries_store: DeliveryStore
    directory: InMemoryDirectory
    smtp: LocalSmtpServer
    worker: LeasedQueue[ClaimedDelivery]

    def account(self, *contacts: ContactAddress, language: Language = Language.JA) -> str:
        account_id = str(uuid.uuid4())
        self.directory.accounts[account_id] = RegisteredContacts(
            account_id=account_id, contacts=contacts, language=language
        )
        return account_id

    async def send(
        self,
        account_id: str,
        kind: NoticeKind,
        params: dict[str, Any],
        *,
        key: str | None = None,
        caller: str = "identity",
    ) -> uuid.UUID:
        accepted = await self.store.accept(
            NewNotice(
                kind=kind,
                caller=caller,
                idempotency_key=key or str(uuid.uuid4()),
                recipient=Recipient(account_id=account_id),
                params=params,
            ),
            LIMIT,
        )
        return accepted.notice_id

    async def drain(self, passes: int = 20) -> None:
        """Run worker passes until nothing is due (retries wait their short backoff)."""
        for _ in range(passes):
            if await self.worker.deliver_due() == 0:
                wait = await self.worker.seconds_until_next_due()
                if wait is None or wait > 5:
                    return
                await asyncio.sleep(max(wait, 0) + 0.01)

    async def deliveries(self, account_id: str) -> list[DeliveryRecord]:
        return await self.deliveries_store.of_account(
            uuid.UUID(account_id), before_seq=None, limit=500
        )


def smtp_provider(server: LocalSmtpServer, name: str = "smtp-main") -> SmtpProvider:
    return SmtpProvider(
        name, host="127.0.0.1", port=server.port, mail_from="Mamoru <no-reply@mamoru.test>"
    )


@pytest_asyncio.fixture
async def smtp() -> AsyncIterator[LocalSmtpServer]:
    server = LocalSmtpServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def make_worker(
    pool, directory: InMemoryDirectory, providers: dict[Channel, ProviderChain]
) -> LeasedQueue[ClaimedDelivery]:
    attempts = DeliveryAttempts(
        DeliveryStore(pool),
        directory,
        providers,
        link_base_url=BASE_URL,
        operator_emails=["ops@mamoru.test"],
    )
    return delivery_queue(pool, attempts, FAST_RETRY)


@pytest.fixture
def rig(pool, smtp) -> Rig:
    directory = InMemoryDirectory()
    worker = make_worker(pool, directory, {Channel.EMAIL: ProviderChain([smtp_provider(smtp)])})
    return Rig(NoticeStore(pool), DeliveryStore(pool), directory, smtp, worker)


RESET: dict[str, Any] = {"secret": "reset-token-123", "expires_at": None}


async def test_reset_link_reaches_only_the_primary_verified_email(rig: Rig) -> None:
    account = rig.account(
        email("other@example.jp"),
        email("primary@example.jp", primary=True),
        email("pending@example.jp", verified=False),
        phone("+819012345678"),
    )
    await rig.send(account, NoticeKind.PASSWORD_RESET, RESET)
    await rig.drain()

    assert [m.recipients for m in rig.smtp.messages] == [["primary@example.jp"]]
    assert "reset-token-123" in rig.smtp.messages[0].text()
    (delivery,) = await rig.deliveries(account)
    assert (delivery.status, delivery.address) == (DeliveryStatus.SENT, "primary@example.jp")


async def test_contacts_changed_after_the_request_are_read_at_send_time(rig: Rig) -> None:
    account = rig.account(email("old@example.jp", primary=True))
    await rig.send(account, NoticeKind.PASSWORD_RESET, RESET)
    rig.directory.accounts[account] = RegisteredContacts(
        account_id=account, contacts=(email("new@example.jp", primary=True),)
    )
    await rig.drain()

    assert rig.smtp.to("old@example.jp") == []
    assert len(rig.smtp.to("new@example.jp")) == 1
    (delivery,) = await rig.deliveries(account)
    assert delivery.address == "new@example.jp"


async def test_reset_secret_is_forgotten_once_sent(rig: Rig, pool) -> None:
    account = rig.account(email("p@example.jp", primary=True))
    notice_id = await rig.send(account, NoticeKind.PASSWORD_RESET, RESET)
    await rig.drain()

    params = await pool.fetchval("select params from notices where id = $1", notice_id)
    assert "secret" not in params


async def test_smtp_refusing_the_first_two_attempts_still_delivers_once(rig: Rig) -> None:
    account = rig.account(email("p@example.jp", primary=True))
    rig.smtp.refuse_next(2)
    await rig.send(account, NoticeKind.PASSWORD_RESET, RESET)
    await rig.drain()

    assert len(rig.smtp.messages) == 1
    (delivery,) = await rig.deliveries(account)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 3)


async def test_the_same_idempotency_key_twice_sends_one_email(rig: Rig) -> None:
    account = rig.account(email("p@example.jp", primary=True))
    first = await rig.send(account, NoticeKind.PASSWORD_RESET, RESET, key="reset-1")
    second = await rig.send(account, NoticeKind.PASSWORD_RESET, RESET, key="reset-1")
    await rig.drain()

    assert first == second
    assert len(rig.smtp.messages) == 1


async def test_japanese_merchant_with_html_characters_is_rendered_and_escaped(rig: Rig) -> None:
    account = rig.account(email("p@example.jp", primary=True))
    movement = str(uuid.uuid4())
    await rig.send(
        account,
        NoticeKind.PAYMENT,
        {
            "amount_minor": 1280,
            "currency": "JPY",
            "counterparty": 'カフェ<b>&"まもる"</b>',
            "occurred_at": "2025-03-01T03:04:00+00:00",
            "movement_id": movement,
            "detail": "",
        },
        caller="wallet",
    )
    await rig.drain()

    (message,) = rig.smtp.to("p@example.jp")
    assert message.subject == "【Mamoru】お支払いのお知らせ"
    assert 'カフェ<b>&"まもる"</b>' in message.text()
    assert "¥1,280" in message.text()
    assert "2025年3月1日 12:04" in message.text()
    html = message.html()
    assert "カフェ&lt;b&gt;&amp;&quot;まもる&quot;&lt;/b&gt;" in html
    assert "<b>" not in html
    assert f"{BASE_URL}/wallet/not-me?movement={movement}" in html


async def test_a_flood_of_resets_sends_a_bounded_number_of_emails(rig: Rig) -> None:
    account = rig.account(email("p@example.jp", primary=True))
    await asyncio.gather(*(rig.send(account, NoticeKind.PASSWORD_RESET, RESET) for _ in range(100)))
    await rig.drain()

    assert len(rig.smtp.messages) == LIMIT.limit
    statuses = [d.status for d in await rig.deliveries(account)]
    assert statuses.count(DeliveryStatus.COALESCED) == 100 - LIMIT.limit
    assert statuses.count(DeliveryStatus.SENT) == LIMIT.limit


async def test_identity_outage_retries_and_never_guesses_an_address(rig: Rig) -> None:
    account = rig.account(email("p@example.jp", primary=True))
    rig.directory.down = True
    await rig.send(account, NoticeKind.PASSWORD_RESET, RESET)
    await rig.worker.deliver_due()

    (delivery,) = await rig.deliveries(account)
    assert (delivery.status, delivery.address) == (DeliveryStatus.FAILED, "")
    assert rig.smtp.messages == []
    rig.directory.down = False
    await rig.drain()
    assert len(rig.smtp.to("p@example.jp")) == 1


async def test_a_delivery_that_keeps_failing_is_dead_lettered_and_can_be_retried(
    rig: Rig,
) -> None:
    account = rig.account(email("p@example.jp", primary=True))
    rig.smtp.refuse_next(FAST_RETRY.max_attempts)
    await rig.send(account, NoticeKind.PASSWORD_CHANGED, {"occurred_at": None})
    await rig.drain()

    dead = await rig.deliveries_store.dead_letters(before_seq=None, limit=10)
    assert [(d.channel, d.attempts) for d in dead] == [(Channel.EMAIL, FAST_RETRY.max_attempts)]
    assert "451" in dead[0].last_error
    retried = await rig.deliveries_store.retry_dead(dead[0].delivery_id)
    assert retried is not None and retried.status is DeliveryStatus.PENDING
    await rig.drain()
    assert len(rig.smtp.to("p@example.jp")) == 1


async def test_email_fails_over_to_the_next_relay(pool) -> None:
    broken, spare = LocalSmtpServer(), LocalSmtpServer()
    await broken.start()
    await spare.start()
    try:
        broken.refuse_next(1000)
        directory = InMemoryDirectory()
        relays = [smtp_provider(broken, "smtp-main"), smtp_provider(spare, "smtp-spare")]
        worker = make_worker(pool, directory, {Channel.EMAIL: ProviderChain(relays)})
        rig = Rig(NoticeStore(pool), DeliveryStore(pool), directory, spare, worker)
        account = rig.account(email("p@example.jp", primary=True))
        await rig.send(account, NoticeKind.PASSWORD_RESET, RESET)
        await rig.drain()

        assert broken.messages == []
        assert len(spare.to("p@example.jp")) == 1
        (delivery,) = await rig.deliveries(account)
        assert (delivery.provider, delivery.attempts) == ("smtp-spare", 1)
    finally:
        await broken.stop()
        await spare.stop()


@pytest_asyncio.fixture
async def sms_providers() -> AsyncIterator[tuple[str, str, list[dict[str, object]]]]:
    """Two local HTTP SMS providers: the first answers 503, the second takes messages."""
    received: list[dict[str, object]] = []

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503)

    async def working(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer sms-key":
            return web.Response(status=401)
        received.append(await request.json())
        return web.json_response({"accepted": True})

    app = web.Application()
    app.router.add_post("/broken", broken)
    app.router.add_post("/send", working)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/broken", f"http://127.0.0.1:{port}/send", received
    finally:
        await runner.cleanup()


async def test_security_notice_reaches_every_verified_channel(
    rig: Rig, pool, sms_providers: tuple[str, str, list[dict[str, object]]]
) -> None:
    broken_url, working_url, received = sms_providers
    sms = [
        HttpProvider("sms-a", endpoint=broken_url, api_key=Secret("sms-key")),
        HttpProvider("sms-b", endpoint=working_url, api_key=Secret("sms-key")),
    ]
    rig.worker = make_worker(
        pool,
        rig.directory,
        {Channel.EMAIL: ProviderChain([smtp_provider(rig.smtp)]), Channel.SMS: ProviderChain(sms)},
    )
    account = rig.account(
        email("p@example.jp", primary=True),
        phone("+819011112222"),
        phone("+819033334444", verified=False),
        language=Language.EN,
    )
    try:
        await rig.send(
            account,
            NoticeKind.NEW_DEVICE_SIGN_IN,
            {"occurred_at": "2025-03-01T03:04:00+00:00", "device": "Firefox", "detail": ""},
        )
        await rig.drain()
    finally:
        for provider in sms:
            await provider.close()

    assert [m["to"] for m in received] == ["+819011112222"]
    assert "new device" in str(received[0]["text"])
    assert len(rig.smtp.to("p@example.jp")) == 1
    by_channel = {d.channel: d for d in await rig.deliveries(account)}
    assert by_channel[Channel.SMS].provider == "sms-b"
    assert by_channel[Channel.PUSH].status is DeliveryStatus.NO_ADDRESS
    assert by_channel[Channel.INBOX].status is DeliveryStatus.SENT
    inbox = await InboxStore(pool).items(
        uuid.UUID(account), unread_only=True, before_seq=None, limit=5
    )
    assert [item.subject for item in inbox] == ["Mamoru: sign-in from a new device"]


async def test_unknown_account_is_recorded_without_sending(rig: Rig) -> None:
    stranger = str(uuid.uuid4())
    await rig.send(stranger, NoticeKind.PASSWORD_RESET, RESET)
    await rig.drain()

    assert rig.smtp.messages == []
    (delivery,) = await rig.deliveries(stranger)
    assert delivery.status is DeliveryStatus.NO_ADDRESS


# The test relay has no certificate; production relays get AUTH over STARTTLS.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtp_authentication_uses_the_configured_credentials(rig: Rig, pool) -> None:
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login, auth_data.password) == (b"mamoru", b"relay-secret")
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=ok)

    received: list[Envelope] = []

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(
        Keep(),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        relay = SmtpProvider(
            "smtp-auth",
            host="127.0.0.1",
            port=port,
            mail_from="no-reply@mamoru.test",
            username="mamoru",
            password=Secret("relay-secret"),
        )
        rig.worker = make_worker(pool, rig.directory, {Channel.EMAIL: ProviderChain([relay])})
        account = rig.account(email("p@example.jp", primary=True))
        await rig.send(account, NoticeKind.PASSWORD_RESET, RESET)
        await rig.drain()
    finally:
        controller.stop()

    assert logins == [(b"mamoru", b"relay-secret")]
    assert [e.rcpt_tos for e in received] == [["p@example.jp"]]


class CountingRelay:
    """An SMTP relay counting its connections (one EHLO each); with ``drop_after_first``
    it hangs up once the first message is taken, as a relay that drops clients does."""

    def __init__(self, *, drop_after_first: bool = False) -> None:
        self.connections = 0
        self.received: list[Envelope] = []
        self._drop = drop_after_first

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):
        self.received.append(envelope)
        if self._drop:
            self._drop = False
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 OK"


def relay_provider(port: int) -> SmtpProvider:
    return SmtpProvider("smtp-counted", host="127.0.0.1", port=port, mail_from="n@mamoru.test")


async def test_a_batch_of_emails_goes_over_one_smtp_connection(rig: Rig, pool) -> None:
    relay, port = CountingRelay(), free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    provider = relay_provider(port)
    try:
        rig.worker = make_worker(pool, rig.directory, {Channel.EMAIL: ProviderChain([provider])})
        for number in range(5):
            account = rig.account(email(f"p{number}@example.jp", primary=True))
            await rig.send(account, NoticeKind.PASSWORD_CHANGED, {"occurred_at": None})
        await rig.drain()
    finally:
        await provider.close()
        controller.stop()

    assert sorted(e.rcpt_tos[0] for e in relay.received) == [f"p{n}@example.jp" for n in range(5)]
    assert relay.connections == 1


async def test_a_kept_connection_the_relay_dropped_is_replaced_without_losing_a_message(
    rig: Rig, pool
) -> None:
    relay, port = CountingRelay(drop_after_first=True), free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    provider = relay_provider(port)
    try:
        rig.worker = make_worker(pool, rig.directory, {Channel.EMAIL: ProviderChain([provider])})
        accounts = [rig.account(email(f"p{n}@example.jp", primary=True)) for n in range(2)]
        for account in accounts:
            await rig.send(account, NoticeKind.PASSWORD_CHANGED, {"occurred_at": None})
        await rig.drain()
        records = [d for account in accounts for d in await rig.deliveries(account)]
    finally:
        await provider.close()
        controller.stop()

    assert len(relay.received) == 2
    assert relay.connections == 2
    email_records = [d for d in records if d.channel is Channel.EMAIL]
    assert [(d.status, d.attempts) for d in email_records] == [(DeliveryStatus.SENT, 1)] * 2
