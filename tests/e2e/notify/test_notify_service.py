"""notify as a real server beside the real identity, with the local SMTP server."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2
from mamoru.notify.v1 import notify_pb2

from services.runtime.access import bearer_metadata
from tests.harness import Cluster
from tests.support.identity_driver import IdentityDriver
from tests.support.people import code_in

FAST = {
    "NOTIFY_RETRY_BASE_SECONDS": "0.05",
    "NOTIFY_RETRY_MAX_SECONDS": "0.2",
    "NOTIFY_POLL_SECONDS": "0.1",
    "NOTIFY_OPERATOR_EMAILS": "ops@mamoru.test",
    "NOTIFY_LINK_BASE_URL": "https://mamoru.test",
}
TIMEOUT = 10.0


async def start(cluster: Cluster, *, with_risk: bool = False, **env: str) -> None:
    """identity and notify; risk too when a test signs in (without risk, identity
    asks every sign-in for a second factor)."""
    if with_risk:
        await cluster.start("risk")
    # Identity seals its secrets with a key from the environment; any fresh key will do.
    identity_key = base64.b64encode(os.urandom(32)).decode()
    await cluster.start("identity", env={"IDENTITY_SECRETS_KEY": identity_key})
    await cluster.start("notify", env={**FAST, **env})


def reset_request(account_id: str, key: str | None = None) -> notify_pb2.SendNoticeRequest:
    return notify_pb2.SendNoticeRequest(
        account_id=account_id,
        kind=notify_pb2.NOTICE_KIND_PASSWORD_RESET,
        code=notify_pb2.CodeParams(secret="reset-token"),
        idempotency_key=key or str(uuid.uuid4()),
    )


def alert(key: str) -> notify_pb2.SendOperatorAlertRequest:
    return notify_pb2.SendOperatorAlertRequest(
        alert_id="alert-1",
        severity=notify_pb2.SEVERITY_CRITICAL,
        summary="login failures <x5> from one ASN",
        evidence_json='{"asn": 64500}',
        idempotency_key=key,
    )


async def deliveries(cluster: Cluster, account_id: str) -> list[notify_pb2.Delivery]:
    operator = cluster.stub("notify", as_="operator")
    reply = await operator.ListDeliveries(
        notify_pb2.ListDeliveriesRequest(
            account_id=account_id, page=common_pb2.PageRequest(page_size=200)
        ),
        timeout=TIMEOUT,
    )
    return list(reply.deliveries)


async def test_a_caller_that_is_not_identity_is_denied_security_kinds(cluster: Cluster) -> None:
    await start(cluster)
    account_id = str(uuid.uuid4())
    for caller in ("wallet", "operator"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cluster.stub("notify", as_=caller).SendNotice(
                reset_request(account_id), timeout=TIMEOUT
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for caller in ("risk", "gateway", "pos"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cluster.stub("notify", as_=caller).SendNotice(
                reset_request(account_id), timeout=TIMEOUT
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await deliveries(cluster, account_id) == []

    accepted = await cluster.stub("notify", as_="identity").SendNotice(
        reset_request(account_id), timeout=TIMEOUT
    )
    assert uuid.UUID(accepted.notice_id)


async def test_wallet_may_send_money_notices_but_not_security_ones(cluster: Cluster) -> None:
    await start(cluster)
    wallet = cluster.stub("notify", as_="wallet")
    payer_id = str(uuid.uuid4())
    reply = await wallet.SendNotice(
        notify_pb2.SendNoticeRequest(
            payer_id=payer_id,
            kind=notify_pb2.NOTICE_KIND_TOP_UP,
            money=notify_pb2.MoneyParams(
                amount=common_pb2.Money(amount_minor=5000, currency="JPY"),
                counterparty="VISA ****4242",
                movement_id=str(uuid.uuid4()),
            ),
            idempotency_key="top-up-1",
        ),
        timeout=TIMEOUT,
    )
    assert not reply.coalesced
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await wallet.SendNotice(
            notify_pb2.SendNoticeRequest(
                payer_id=payer_id,
                kind=notify_pb2.NOTICE_KIND_NEW_DEVICE_SIGN_IN,
                security_event=notify_pb2.SecurityEventParams(detail="x"),
                idempotency_key="not-allowed",
            ),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_params_that_do_not_match_the_kind_are_refused_naming_the_field(
    cluster: Cluster,
) -> None:
    await start(cluster)
    identity = cluster.stub("notify", as_="identity")
    account_id = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.SendNotice(
            notify_pb2.SendNoticeRequest(
                account_id=account_id,
                kind=notify_pb2.NOTICE_KIND_PASSWORD_RESET,
                money=notify_pb2.MoneyParams(counterparty="shop"),
                idempotency_key="wrong-params",
            ),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "code: is required for NOTICE_KIND_PASSWORD_RESET" in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.SendNotice(
            notify_pb2.SendNoticeRequest(
                account_id=account_id,
                kind=notify_pb2.NOTICE_KIND_PAYMENT,
                money=notify_pb2.MoneyParams(
                    amount=common_pb2.Money(amount_minor=-5, currency="USD"),
                    counterparty="shop",
                ),
                idempotency_key="bad money",
            ),
            timeout=TIMEOUT,
        )
    details = refused.value.details() or ""
    for field in ("money.amount.currency", "money.movement_id", "idempotency_key"):
        assert field in details
    assert await deliveries(cluster, account_id) == []


async def test_operator_alert_survives_two_smtp_refusals_and_arrives_once(
    cluster: Cluster,
) -> None:
    await start(cluster)
    cluster.smtp.refuse_next(2)
    await cluster.stub("notify", as_="risk").SendOperatorAlert(alert("alert-1"), timeout=TIMEOUT)

    (message,) = await cluster.smtp.wait_for(1, within=TIMEOUT, to="ops@mamoru.test")
    assert "login failures <x5> from one ASN" in message.text()
    assert "login failures &lt;x5&gt; from one ASN" in message.html()
    await asyncio.sleep(0.5)
    assert len(cluster.smtp.messages) == 1


async def test_the_same_idempotency_key_twice_yields_one_email(cluster: Cluster) -> None:
    await start(cluster)
    risk = cluster.stub("notify", as_="risk")
    first = await risk.SendOperatorAlert(alert("same-key"), timeout=TIMEOUT)
    second = await risk.SendOperatorAlert(alert("same-key"), timeout=TIMEOUT)
    await cluster.smtp.wait_for(1, within=TIMEOUT)
    await asyncio.sleep(0.5)

    assert first.notice_id == second.notice_id
    assert len(cluster.smtp.messages) == 1


async def test_a_flood_of_reset_requests_is_coalesced_and_recorded(cluster: Cluster) -> None:
    await start(cluster, NOTIFY_COALESCE_LIMIT="3", NOTIFY_COALESCE_WINDOW_SECONDS="60")
    identity = cluster.stub("notify", as_="identity")
    account_id = str(uuid.uuid4())
    replies = await asyncio.gather(
        *(identity.SendNotice(reset_request(account_id), timeout=TIMEOUT) for _ in range(100))
    )

    assert sum(reply.coalesced for reply in replies) == 97
    recorded = await deliveries(cluster, account_id)
    assert len(recorded) == 100
    coalesced = [d for d in recorded if d.status == notify_pb2.DELIVERY_STATUS_COALESCED]
    assert len(coalesced) == 97
    since = Timestamp()
    since.GetCurrentTime()
    since.seconds -= 300
    stats = await cluster.stub("notify", as_="operator").GetDeliveryStats(
        notify_pb2.GetDeliveryStatsRequest(since=since), timeout=TIMEOUT
    )
    (row,) = stats.stats
    assert (row.kind, row.channel, row.coalesced) == (
        notify_pb2.NOTICE_KIND_PASSWORD_RESET,
        notify_pb2.CHANNEL_EMAIL,
        97,
    )


async def test_a_dead_letter_is_listed_and_can_be_sent_again(cluster: Cluster) -> None:
    await start(cluster, NOTIFY_MAX_ATTEMPTS="1")
    operator = cluster.stub("notify", as_="operator")
    cluster.smtp.refuse_next(1)
    await cluster.stub("notify", as_="risk").SendOperatorAlert(alert("dead-1"), timeout=TIMEOUT)

    async with asyncio.timeout(TIMEOUT):
        while True:
            dead = await operator.ListDeadLetters(
                notify_pb2.ListDeadLettersRequest(), timeout=TIMEOUT
            )
            if dead.deliveries:
                break
            await asyncio.sleep(0.1)
    (letter,) = dead.deliveries
    assert (letter.kind, letter.attempts) == (notify_pb2.NOTICE_KIND_OPERATOR_ALERT, 1)
    assert "451" in letter.last_error

    retried = await operator.RetryDeadLetter(
        notify_pb2.RetryDeadLetterRequest(delivery_id=letter.delivery_id), timeout=TIMEOUT
    )
    assert retried.delivery.status == notify_pb2.DELIVERY_STATUS_PENDING
    await cluster.smtp.wait_for(1, within=TIMEOUT, to="ops@mamoru.test")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await operator.RetryDeadLetter(
            notify_pb2.RetryDeadLetterRequest(delivery_id=letter.delivery_id), timeout=TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def people(cluster: Cluster) -> IdentityDriver:
    """Identity's person flows, reading codes from the mail that reached the SMTP server."""
    return IdentityDriver(cluster.stub("identity", as_="gateway"), cluster.smtp)


async def register(cluster: Cluster, email: str) -> str:
    """A verified account through identity; its verification code came by mail."""
    person = await people(cluster).register(email)
    return person.account_id


async def test_a_reset_notice_reaches_exactly_the_registered_primary_address(
    cluster: Cluster,
) -> None:
    await start(cluster)
    account_id = await register(cluster, "hanako@example.jp")
    before = len(cluster.smtp.messages)
    await cluster.stub("notify", as_="identity").SendNotice(
        reset_request(account_id, key="reset-hanako"), timeout=TIMEOUT
    )

    messages = await cluster.smtp.wait_for(before + 1, within=TIMEOUT)
    (reset,) = messages[before:]
    assert reset.recipients == ["hanako@example.jp"]
    assert "reset-token" in reset.text()
    (delivery,) = [
        d
        for d in await deliveries(cluster, account_id)
        if d.kind == notify_pb2.NOTICE_KIND_PASSWORD_RESET
    ]
    assert delivery.address == "hanako@example.jp"


async def test_a_flood_of_resets_to_a_real_account_sends_a_bounded_number_of_emails(
    cluster: Cluster,
) -> None:
    await start(cluster, NOTIFY_COALESCE_LIMIT="3", NOTIFY_COALESCE_WINDOW_SECONDS="60")
    account_id = await register(cluster, "taro@example.jp")
    identity = cluster.stub("notify", as_="identity")
    await asyncio.gather(
        *(identity.SendNotice(reset_request(account_id), timeout=TIMEOUT) for _ in range(100))
    )

    await cluster.smtp.wait_for(1 + 3, within=TIMEOUT, to="taro@example.jp")
    await asyncio.sleep(1.0)
    assert len(cluster.smtp.to("taro@example.jp")) == 1 + 3


async def test_a_payment_notice_names_the_escaped_merchant_and_a_not_me_link(
    cluster: Cluster,
) -> None:
    await start(cluster)
    account_id = await register(cluster, "jiro@example.jp")
    movement_id = str(uuid.uuid4())
    await cluster.stub("notify", as_="identity").SendNotice(
        notify_pb2.SendNoticeRequest(
            account_id=account_id,
            kind=notify_pb2.NOTICE_KIND_PAYMENT,
            money=notify_pb2.MoneyParams(
                amount=common_pb2.Money(amount_minor=1280, currency="JPY"),
                counterparty="カフェ<b>&まもる</b>",
                movement_id=movement_id,
            ),
            idempotency_key="payment-1",
        ),
        timeout=TIMEOUT,
    )

    messages = await cluster.smtp.wait_for(2, within=TIMEOUT, to="jiro@example.jp")
    payment = messages[-1]
    assert "¥1,280" in payment.text() and "カフェ<b>&まもる</b>" in payment.text()
    assert "カフェ&lt;b&gt;&amp;まもる&lt;/b&gt;" in payment.html()
    assert f"https://mamoru.test/wallet/not-me?movement={movement_id}" in payment.html()


async def test_inbox_and_preferences_belong_to_the_token_account(cluster: Cluster) -> None:
    await start(cluster, with_risk=True)
    identity = people(cluster)
    someone = await identity.register("saburo@example.jp")
    account_id = someone.account_id
    # A group-ID session: notify's person RPCs take the group audience.
    token = (await identity.sign_in(someone)).access_token
    person = cluster.stub("notify", as_="gateway")
    await cluster.stub("notify", as_="identity").SendNotice(
        notify_pb2.SendNoticeRequest(
            account_id=account_id,
            kind=notify_pb2.NOTICE_KIND_PASSWORD_CHANGED,
            security_event=notify_pb2.SecurityEventParams(detail="password changed"),
            idempotency_key="changed-1",
        ),
        timeout=TIMEOUT,
    )
    async with asyncio.timeout(TIMEOUT):
        while True:
            inbox = await person.ListInbox(
                notify_pb2.ListInboxRequest(unread_only=True),
                metadata=bearer_metadata(token),
                timeout=TIMEOUT,
            )
            if inbox.items:
                break
            await asyncio.sleep(0.1)
    marked = await person.MarkRead(
        notify_pb2.MarkReadRequest(notice_ids=[inbox.items[0].notice_id]),
        metadata=bearer_metadata(token),
        timeout=TIMEOUT,
    )
    assert marked.marked == 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await person.UpdatePreferences(
            notify_pb2.UpdatePreferencesRequest(muted_kinds=[notify_pb2.NOTICE_KIND_PAYMENT]),
            metadata=bearer_metadata(token),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    muted = await person.UpdatePreferences(
        notify_pb2.UpdatePreferencesRequest(muted_kinds=[notify_pb2.NOTICE_KIND_NEWS]),
        metadata=bearer_metadata(token),
        timeout=TIMEOUT,
    )
    assert list(muted.muted_kinds) == [notify_pb2.NOTICE_KIND_NEWS]


async def test_a_reset_goes_to_the_address_verified_at_send_time_not_at_request_time(
    cluster: Cluster,
) -> None:
    await start(cluster, with_risk=True)
    old, new = "old@example.jp", "new@example.jp"
    identity = people(cluster)
    someone = await identity.register(old)
    account_id = someone.account_id
    session = await identity.sign_in(someone)
    person = bearer_metadata(session.access_token)
    # The reset is accepted while no relay is reachable, so it is dead-lettered
    # after its only attempt and sent again by an operator after the change.
    await cluster.restart("notify", env={**FAST, "SMTP_PORT": "1", "NOTIFY_MAX_ATTEMPTS": "1"})
    await cluster.stub("notify", as_="identity").SendNotice(
        reset_request(account_id, key="reset-before-change"), timeout=TIMEOUT
    )
    operator = cluster.stub("notify", as_="operator")
    async with asyncio.timeout(TIMEOUT):
        while True:
            dead = await operator.ListDeadLetters(
                notify_pb2.ListDeadLettersRequest(), timeout=TIMEOUT
            )
            if dead.deliveries:
                break
            await asyncio.sleep(0.1)

    gateway = cluster.stub("identity", as_="gateway")
    added = await gateway.AddContact(
        identity_pb2.AddContactRequest(
            kind=identity_pb2.CONTACT_KIND_EMAIL,
            address=new,
            make_primary=True,
            # The phone the account was registered on, proving its key on the call.
            device_proof=someone.session_proof("AddContact", session),
        ),
        metadata=person,
        timeout=TIMEOUT,
    )
    await cluster.restart("notify", env=FAST)
    (code_message,) = await cluster.smtp.wait_for(1, within=TIMEOUT, to=new)
    await gateway.VerifyContact(
        identity_pb2.VerifyContactRequest(
            contact_id=added.contact.contact_id, code=code_in(code_message)
        ),
        metadata=person,
        timeout=TIMEOUT,
    )
    operator = cluster.stub("notify", as_="operator")
    await operator.RetryDeadLetter(
        notify_pb2.RetryDeadLetterRequest(delivery_id=dead.deliveries[0].delivery_id),
        timeout=TIMEOUT,
    )

    async with asyncio.timeout(TIMEOUT):
        while not [m for m in cluster.smtp.messages if "reset-token" in m.text()]:
            await cluster.smtp.wait_for(len(cluster.smtp.messages) + 1, within=TIMEOUT)
    (reset,) = [m for m in cluster.smtp.messages if "reset-token" in m.text()]
    assert reset.recipients == [new]
