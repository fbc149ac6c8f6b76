"""The store payment flow (replay, code holder, risk, capture) with in-memory ports."""

from __future__ import annotations

import uuid

import pytest

from services.runtime.errors import AlreadyExists, FailedPrecondition
from services.wallet.domain.payments import CodeHolder
from services.wallet.use_cases.payments import Sale, StorePayments
from tests.unit.wallet.fakes import FakeCodes, FakePaymentLedger, FakeRisk, a_store

CODE = "12345678901234567890"
HOLDER = CodeHolder(uuid.uuid4(), "payer-1", "device-1", "session-1", None)


def a_flow() -> tuple[StorePayments, FakeCodes, FakePaymentLedger, FakeRisk]:
    codes, risk = FakeCodes(), FakeRisk()
    ledger = FakePaymentLedger(codes)
    codes.give(CODE, HOLDER)
    payments = StorePayments(
        codes,
        ledger,
        risk,
        payment_code_seconds=120,
        hold_seconds=900,
    )
    return payments, codes, ledger, risk


MERCHANT, STORE = a_store()


def a_sale(amount: int = 500, key: str = "receipt-1", **source: object) -> Sale:
    fields: dict[str, object] = {"code": CODE, **source}
    return Sale(
        merchant=MERCHANT,
        store=STORE,
        amount=amount,
        idempotency_key=key,
        basket=(3,),
        **fields,  # type: ignore[arg-type]
    )


async def test_a_capture_by_code_is_assessed_for_the_codes_holder_and_posts_once() -> None:
    payments, _, ledger, risk = a_flow()
    sale = a_sale()

    payment = await payments.capture(sale)

    assert [(c.payer_id, c.device_id, c.session_id) for c in risk.payments] == [
        ("payer-1", "device-1", "session-1")
    ]
    assert risk.payments[0].merchant_category == "5411"
    assert risk.payments[0].basket == (3,)
    assert payment["decision_id"] == "decision-1"
    assert len(ledger.captured) == 1


async def test_a_retried_capture_gets_its_first_answer_without_asking_risk_again() -> None:
    payments, _, ledger, risk = a_flow()
    sale = a_sale()
    first = await payments.capture(sale)
    # The code is spent and risk would now refuse: the retry must not notice either.
    risk.refuse = True

    again = await payments.capture(sale)

    assert again == first
    assert len(risk.payments) == 1
    assert len(ledger.captured) == 1


async def test_a_key_reused_for_another_amount_is_refused() -> None:
    payments, _, _, _ = a_flow()
    sale = a_sale(500)
    await payments.capture(sale)

    with pytest.raises(AlreadyExists):
        await payments.capture(a_sale(600))


async def test_an_unknown_code_is_refused_before_risk_is_asked() -> None:
    payments, codes, ledger, risk = a_flow()
    codes.live.clear()

    with pytest.raises(FailedPrecondition) as refused:
        await payments.capture(a_sale())

    assert refused.value.reason == "CODE_INVALID"
    assert risk.payments == []
    assert ledger.captured == []


async def test_suspended_payments_and_risk_refusals_move_no_money() -> None:
    payments, _, ledger, risk = a_flow()
    risk.payments_suspended = True
    with pytest.raises(FailedPrecondition) as suspended:
        await payments.capture(a_sale(key="a"))
    risk.payments_suspended, risk.refuse = False, True
    with pytest.raises(FailedPrecondition) as denied:
        await payments.capture(a_sale(key="b"))

    assert (suspended.value.reason, denied.value.reason) == ("PAYMENTS_SUSPENDED", "RISK_DENIED")
    assert ledger.captured == []


async def test_capturing_a_hold_skips_risk_which_assessed_it_when_it_was_authorized() -> None:
    payments, _, ledger, risk = a_flow()
    authorized = await payments.authorize(a_sale(key="auth"))
    authorization_id = uuid.UUID(authorized["authorization_id"])

    captured = await payments.capture(
        a_sale(
            key="capture",
            code="",
            authorization_id=authorization_id,
            authorization_field=str(authorization_id),
        )
    )

    assert len(risk.payments) == 1
    assert captured["authorization_id"] == str(authorization_id)
    assert len(ledger.captured) == 1
