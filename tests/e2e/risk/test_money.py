"""Top-up and payment assessments fed by identity's and wallet's outcomes."""

from __future__ import annotations

import uuid

import grpc
import pytest
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

TIMEOUT = 10.0


def yen(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="JPY")


async def test_a_top_up_soon_after_a_credential_change_is_challenged_and_its_spend_too(cluster):
    await cluster.start("risk")
    identity = cluster.stub("risk", as_="identity")
    wallet = cluster.stub("risk", as_="wallet")
    account, wallet_id = str(uuid.uuid4()), str(uuid.uuid4())
    own_phone = common_pb2.ClientContext(ip_address="133.1.2.3", device_id="own-phone")
    await identity.RecordOutcome(
        risk_pb2.RecordOutcomeRequest(
            outcome=risk_pb2.OUTCOME_LOGIN_SUCCEEDED, account_id=account, session_id="s-0",
            client=own_phone,
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    client = common_pb2.ClientContext(ip_address="133.1.2.3", device_id="new-phone")
    await identity.RecordOutcome(
        risk_pb2.RecordOutcomeRequest(
            outcome=risk_pb2.OUTCOME_LOGIN_SUCCEEDED, account_id=account, session_id="s-1",
            client=client,
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    await identity.RecordOutcome(
        risk_pb2.RecordOutcomeRequest(
            outcome=risk_pb2.OUTCOME_CREDENTIAL_CHANGED, account_id=account, session_id="s-1"
        ),
        timeout=TIMEOUT,
    )
    top_up = await wallet.AssessTopUp(
        risk_pb2.AssessTopUpRequest(
            wallet_id=wallet_id, payer_id="p-1", amount=yen(20000),
            channel=risk_pb2.TOP_UP_CHANNEL_CARD, funding_source_id="card-9",
            new_funding_source=True, session_id="s-1", client=client,
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    assert top_up.decision.verdict == risk_pb2.VERDICT_CHALLENGE
    assert {r.rule_id for r in top_up.decision.reasons} == {
        "top_up.after_credential_change",
        "top_up.new_funding_source",
    }
    await wallet.RecordOutcome(
        risk_pb2.RecordOutcomeRequest(
            outcome=risk_pb2.OUTCOME_TOP_UP_COMPLETED, wallet_id=wallet_id, session_id="s-1",
            movement_id="m-1", amount=yen(20000), client=client,
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    payment = await wallet.AssessPayment(
        risk_pb2.AssessPaymentRequest(
            wallet_id=wallet_id, payer_id="p-1", amount=yen(15000), merchant_id="shop-1",
            merchant_category="5411", basket_categories=[risk_pb2.GOODS_CATEGORY_GIFT_CARD],
            device_id="new-phone", session_id="s-1",
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    assert payment.decision.verdict == risk_pb2.VERDICT_CHALLENGE
    assert [r.rule_id for r in payment.decision.reasons] == [
        "payment.high_risk_basket",
        "payment.after_new_device_top_up",
    ]


async def test_a_new_customer_spends_at_once_from_the_phone_they_registered_with(cluster):
    await cluster.start("risk")
    identity = cluster.stub("risk", as_="identity")
    wallet = cluster.stub("risk", as_="wallet")
    account, wallet_id = str(uuid.uuid4()), str(uuid.uuid4())
    client = common_pb2.ClientContext(ip_address="133.1.2.3", device_id="first-phone")
    await identity.RecordOutcome(
        risk_pb2.RecordOutcomeRequest(
            outcome=risk_pb2.OUTCOME_LOGIN_SUCCEEDED, account_id=account, session_id="s-1",
            client=client,
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    await wallet.RecordOutcome(
        risk_pb2.RecordOutcomeRequest(
            outcome=risk_pb2.OUTCOME_TOP_UP_COMPLETED, wallet_id=wallet_id, session_id="s-1",
            movement_id="m-1", amount=yen(3000), client=client,
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    payment = await wallet.AssessPayment(
        risk_pb2.AssessPaymentRequest(
            wallet_id=wallet_id, payer_id="p-1", amount=yen(1000), merchant_id="shop-1",
            merchant_category="5411", basket_categories=[risk_pb2.GOODS_CATEGORY_FOOD],
            device_id="first-phone", session_id="s-1",
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    assert payment.decision.verdict == risk_pb2.VERDICT_ALLOW, payment.decision.reasons


async def test_an_everyday_payment_is_allowed(cluster):
    await cluster.start("risk")
    payment = await cluster.stub("risk", as_="wallet").AssessPayment(
        risk_pb2.AssessPaymentRequest(
            wallet_id=str(uuid.uuid4()), payer_id="p-1", amount=yen(480), merchant_id="shop-1",
            merchant_category="5411", basket_categories=[risk_pb2.GOODS_CATEGORY_FOOD],
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    assert payment.decision.verdict == risk_pb2.VERDICT_ALLOW
    assert list(payment.decision.reasons) == []


async def test_a_malformed_assessment_names_each_bad_field_and_stores_nothing(cluster):
    await cluster.start("risk")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cluster.stub("risk", as_="wallet").AssessTopUp(
            risk_pb2.AssessTopUpRequest(wallet_id="nope", amount=yen(-5)), timeout=TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for field in ("wallet_id", "payer_id", "amount.amount_minor", "channel"):
        assert field in refused.value.details()
    stored = await cluster.stub("risk").ListDecisions(
        risk_pb2.ListDecisionsRequest(), timeout=TIMEOUT
    )
    assert list(stored.decisions) == []


async def test_a_wallet_gets_exactly_its_velocity_limit_of_payments_in_the_window(cluster):
    await cluster.start("risk")
    wallet = cluster.stub("risk", as_="wallet")
    wallet_id = str(uuid.uuid4())
    verdicts = []
    for _ in range(11):
        payment = await wallet.AssessPayment(
            risk_pb2.AssessPaymentRequest(
                wallet_id=wallet_id, payer_id="p-1", amount=yen(100), merchant_id="shop-1",
                merchant_category="5411", basket_categories=[risk_pb2.GOODS_CATEGORY_FOOD],
            ),
            timeout=TIMEOUT,
        )  # fmt: skip
        verdicts.append(payment.decision.verdict)
    # payment.velocity allows 10 payments of one wallet in its window; the 11th is refused.
    assert verdicts[:10] == [risk_pb2.VERDICT_ALLOW] * 10
    assert verdicts[10] == risk_pb2.VERDICT_DENY
