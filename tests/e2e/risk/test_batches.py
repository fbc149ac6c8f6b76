"""Many sign-ins in one AssessLogins call and many outcomes in one RecordOutcomes
call, over a real risk server: each is decided, stored and counted as its own
AssessLogin or RecordOutcome would be."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

from tests.e2e.risk.test_login import TIMEOUT, identifier, login, wrong_password


async def test_a_batch_of_sign_ins_is_answered_in_order_and_every_decision_is_stored(cluster):
    await cluster.start("risk")
    risk = cluster.stub("risk", as_="identity")
    operator = cluster.stub("risk")
    accounts = [str(uuid.uuid4()) for _ in range(40)]
    requests = [
        login(ip="203.0.113.40", account_id=account, ident=identifier(f"batch-{n}"))
        for n, account in enumerate(accounts)
    ]
    owner = login(
        ip="133.1.2.3", account_id=str(uuid.uuid4()), ident=identifier("owner"),
        known_device=True, device="owner-phone",
    )  # fmt: skip

    reply = await risk.AssessLogins(
        risk_pb2.AssessLoginsRequest(assessments=[*requests, owner]), timeout=TIMEOUT
    )

    assert len(reply.answers) == len(requests) + 1
    assert reply.answers[-1].decision.verdict == risk_pb2.VERDICT_ALLOW
    # One address trying forty identifiers: the later attempts in the batch see the
    # earlier ones, as they would have one call at a time.
    verdicts = [answer.decision.verdict for answer in reply.answers[:-1]]
    assert verdicts[0] == risk_pb2.VERDICT_ALLOW
    assert verdicts[-1] == risk_pb2.VERDICT_THROTTLE
    for request, answer in zip(requests[::13], reply.answers[::13], strict=False):
        stored = await operator.ListDecisions(
            risk_pb2.ListDecisionsRequest(account_id=request.account_id), timeout=TIMEOUT
        )
        assert [d.decision.decision_id for d in stored.decisions] == [answer.decision.decision_id]


async def test_a_batch_with_an_unreadable_sign_in_is_refused_whole_and_naming_it(cluster):
    await cluster.start("risk")
    risk = cluster.stub("risk", as_="identity")
    good = login(ip="198.51.100.1", ident=identifier("good"))
    bad = login(ip="198.51.100.2", ident=identifier("bad"), method="carrier pigeon")

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await risk.AssessLogins(
            risk_pb2.AssessLoginsRequest(assessments=[good, bad]), timeout=TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "assessments[1].method" in (refused.value.details() or "")

    # A rule only the handler can check names the item too.
    anonymous = login(ip="198.51.100.3")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await risk.AssessLogins(
            risk_pb2.AssessLoginsRequest(assessments=[good, anonymous]), timeout=TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "assessments[1].identifier_hash" in (refused.value.details() or "")


async def test_outcomes_recorded_together_count_as_if_reported_one_by_one(cluster):
    await cluster.start("risk")
    risk = cluster.stub("risk", as_="wallet")
    assessor = cluster.stub("risk", as_="identity")
    failures = [
        wrong_password(login(ip="203.0.113.77", ident=identifier(f"wrong-{n}")), "")
        for n in range(60)
    ]
    payment = risk_pb2.RecordOutcomeRequest(
        outcome=risk_pb2.OUTCOME_PAYMENT_CAPTURED,
        wallet_id=str(uuid.uuid4()),
        payer_id="payer-1",
        amount=common_pb2.Money(amount_minor=1_200, currency="JPY"),
        movement_id=f"movement-{uuid.uuid4()}",
    )

    # The same money movement reported twice (a retried relay) is stored once.
    await risk.RecordOutcomes(
        risk_pb2.RecordOutcomesRequest(outcomes=[*failures, payment, payment]), timeout=TIMEOUT
    )

    decision = (
        await assessor.AssessLogin(
            login(ip="203.0.113.77", ident=identifier("one-more")), timeout=TIMEOUT
        )
    ).decision
    assert decision.verdict == risk_pb2.VERDICT_THROTTLE
    fired = {reason.rule_id: reason for reason in decision.reasons}
    assert fired["login.ip_failures"].observed >= 60
    database = await asyncpg.connect(cluster.database_urls["risk"])
    try:
        stored = await database.fetchval(
            "select count(*) from outcomes where movement_id = $1", payment.movement_id
        )
    finally:
        await database.close()
    assert stored == 1


async def test_payments_assessed_together_each_read_their_own_wallets_last_top_up(cluster):
    await cluster.start("risk")
    identity = cluster.stub("risk", as_="identity")
    wallet = cluster.stub("risk", as_="wallet")
    account, topped_up = str(uuid.uuid4()), str(uuid.uuid4())
    for session, device in (("s-0", "own-phone"), ("s-1", "new-phone")):
        await identity.RecordOutcome(
            risk_pb2.RecordOutcomeRequest(
                outcome=risk_pb2.OUTCOME_LOGIN_SUCCEEDED, account_id=account, session_id=session,
                client=common_pb2.ClientContext(ip_address="133.1.2.3", device_id=device),
            ),
            timeout=TIMEOUT,
        )  # fmt: skip
    await wallet.RecordOutcome(
        risk_pb2.RecordOutcomeRequest(
            outcome=risk_pb2.OUTCOME_TOP_UP_COMPLETED, wallet_id=topped_up, session_id="s-1",
            movement_id=f"m-{uuid.uuid4()}", amount=yen(20_000),
            client=common_pb2.ClientContext(ip_address="133.1.2.3", device_id="new-phone"),
        ),
        timeout=TIMEOUT,
    )  # fmt: skip

    def payment(wallet_id: str) -> risk_pb2.AssessPaymentRequest:
        return risk_pb2.AssessPaymentRequest(
            wallet_id=wallet_id, payer_id="p-1", amount=yen(15_000), merchant_id="shop-1",
            merchant_category="5411", basket_categories=[risk_pb2.GOODS_CATEGORY_GIFT_CARD],
            device_id="new-phone", session_id="s-1",
        )  # fmt: skip

    others = [str(uuid.uuid4()), str(uuid.uuid4())]
    reply = await wallet.AssessPayments(
        risk_pb2.AssessPaymentsRequest(
            assessments=[payment(others[0]), payment(topped_up), payment(others[1])]
        ),
        timeout=TIMEOUT,
    )

    fired = [[r.rule_id for r in answer.decision.reasons] for answer in reply.answers]
    assert "payment.after_new_device_top_up" in fired[1]
    assert "payment.after_new_device_top_up" not in fired[0] + fired[2]
    assert len({answer.decision.decision_id for answer in reply.answers}) == 3


def yen(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="JPY")
