"""Cases and the victim query: exact, reproducible answers from stored events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

TIMEOUT = 10.0
ATTACKER_IP = "203.0.113.50"


def stamp(moment: datetime) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(moment)
    return value


async def signed_in(identity, account: str, session: str, ip: str, device: str) -> None:
    await identity.RecordOutcome(
        risk_pb2.RecordOutcomeRequest(
            outcome=risk_pb2.OUTCOME_LOGIN_SUCCEEDED,
            account_id=account,
            session_id=session,
            client=common_pb2.ClientContext(ip_address=ip, device_id=device),
        ),
        timeout=TIMEOUT,
    )


async def moved(wallet, outcome, wallet_id: str, session: str, movement: str, amount: int):
    await wallet.RecordOutcome(
        risk_pb2.RecordOutcomeRequest(
            outcome=outcome,
            wallet_id=wallet_id,
            session_id=session,
            movement_id=movement,
            amount=common_pb2.Money(amount_minor=amount, currency="JPY"),
        ),
        timeout=TIMEOUT,
    )


def summary(reply: risk_pb2.FindAffectedAccountsResponse):
    return [
        (a.account_id, list(a.session_ids), [(m.movement_id, m.kind, m.amount.amount_minor)
         for m in a.movements], a.total.amount_minor)
        for a in reply.accounts
    ]  # fmt: skip


async def test_find_affected_accounts_gives_the_same_accounts_and_amounts_on_every_run(cluster):
    await cluster.start("risk")
    identity = cluster.stub("risk", as_="identity")
    wallet = cluster.stub("risk", as_="wallet")
    operator = cluster.stub("risk")
    started = datetime.now(UTC) - timedelta(minutes=5)
    victims = sorted(str(uuid.uuid4()) for _ in range(3))
    bystander = str(uuid.uuid4())
    wallets = {account: str(uuid.uuid4()) for account in [*victims, bystander]}

    await signed_in(identity, victims[0], "s-0", ATTACKER_IP, "evil-1")
    await signed_in(identity, victims[1], "s-1", "203.0.113.51", "evil-2")  # same /24
    await signed_in(identity, victims[2], "s-2", "192.0.2.9", "evil-phone")  # known device
    await signed_in(identity, bystander, "s-own", "133.1.2.3", "own-phone")
    top_up, pay = risk_pb2.OUTCOME_TOP_UP_COMPLETED, risk_pb2.OUTCOME_PAYMENT_CAPTURED
    await moved(wallet, top_up, wallets[victims[0]], "s-0", "m-1", 30000)
    await moved(wallet, pay, wallets[victims[0]], "s-0", "m-2", 29000)
    await moved(wallet, pay, wallets[victims[0]], "s-0", "m-2", 29000)  # a retried report
    await moved(wallet, pay, wallets[victims[1]], "s-1", "m-3", 12000)
    await moved(wallet, pay, wallets[bystander], "s-own", "m-4", 500)

    opened = await wallet.OpenCase(
        risk_pb2.OpenCaseRequest(
            source=risk_pb2.CASE_SOURCE_USER_REPORT, account_id=victims[0],
            wallet_id=wallets[victims[0]], movement_id="m-2", description="this wasn't me",
            idempotency_key="report-1",
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    again = await wallet.OpenCase(
        risk_pb2.OpenCaseRequest(
            source=risk_pb2.CASE_SOURCE_USER_REPORT, account_id=victims[0],
            description="this wasn't me", idempotency_key="report-1",
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    assert again.case.case_id == opened.case.case_id
    case_id = opened.case.case_id
    updated = await operator.UpdateCase(
        risk_pb2.UpdateCaseRequest(
            case_id=case_id, status=risk_pb2.CASE_STATUS_INVESTIGATING, assignee="aiko",
            note="same /24 as the wave",
        ),
        metadata=(("x-operator", "aiko"),),
        timeout=TIMEOUT,
    )  # fmt: skip
    assert updated.case.status == risk_pb2.CASE_STATUS_INVESTIGATING
    assert list(updated.case.notes) == ["this wasn't me", "operator:aiko: same /24 as the wave"]

    with pytest.raises(grpc.aio.AioRpcError) as not_yet:
        await operator.FindAffectedAccounts(
            risk_pb2.FindAffectedAccountsRequest(case_id=case_id), timeout=TIMEOUT
        )
    assert not_yet.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    indicators = risk_pb2.Indicators(
        ip_addresses=[ATTACKER_IP], subnets=["203.0.113.0/24"], device_ids=["evil-phone"],
        window_start=stamp(started),
    )  # fmt: skip
    confirmed = await operator.ConfirmFraud(
        risk_pb2.ConfirmFraudRequest(case_id=case_id, indicators=indicators, reason="wave"),
        timeout=TIMEOUT,
    )
    assert confirmed.case.status == risk_pb2.CASE_STATUS_CONFIRMED_FRAUD
    assert confirmed.case.indicators.HasField("window_end")

    first = await operator.FindAffectedAccounts(
        risk_pb2.FindAffectedAccountsRequest(case_id=case_id), timeout=TIMEOUT
    )
    # Events after the case's window do not change the case's answer.
    await signed_in(identity, bystander, "s-late", ATTACKER_IP, "evil-1")
    second = await operator.FindAffectedAccounts(
        risk_pb2.FindAffectedAccountsRequest(case_id=case_id), timeout=TIMEOUT
    )
    assert second == first
    expected = [
        (victims[0], ["s-0"], [("m-1", "top_up", 30000), ("m-2", "payment", 29000)], 59000),
        (victims[1], ["s-1"], [("m-3", "payment", 12000)], 12000),
        (victims[2], ["s-2"], [], 0),
    ]
    assert summary(first) == sorted(expected)
    assert first.total == common_pb2.Money(amount_minor=71000, currency="JPY")

    direct = await operator.FindAffectedAccounts(
        risk_pb2.FindAffectedAccountsRequest(indicators=indicators), timeout=TIMEOUT
    )
    assert bystander in {a.account_id for a in direct.accounts}


async def test_a_case_cannot_be_confirmed_without_indicators_and_stays_unchanged(cluster):
    await cluster.start("risk")
    operator = cluster.stub("risk")
    opened = await operator.OpenCase(
        risk_pb2.OpenCaseRequest(source=risk_pb2.CASE_SOURCE_ANALYST, idempotency_key="a-1"),
        timeout=TIMEOUT,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await operator.ConfirmFraud(
            risk_pb2.ConfirmFraudRequest(case_id=opened.case.case_id, reason="sure"),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fetched = await operator.GetCase(
        risk_pb2.GetCaseRequest(case_id=opened.case.case_id), timeout=TIMEOUT
    )
    assert fetched.case == opened.case
    listed = await operator.ListCases(
        risk_pb2.ListCasesRequest(status=risk_pb2.CASE_STATUS_OPEN), timeout=TIMEOUT
    )
    assert [c.case_id for c in listed.cases] == [opened.case.case_id]
