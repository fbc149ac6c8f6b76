"""The wallet over real gRPC from a store's and an operator's side, with the real
identity, risk and notify beside it. Payers are set up as a person would (tokens
from identity, a card top-up at the sandbox processor), never behind the
services' backs; the person-facing paths themselves are in test_person_path.py.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2

from tests.e2e.wallet.test_person_path import a_register, funded_payer
from tests.harness import Cluster
from tests.support.identity_driver import IdentityDriver
from tests.support.payer import Payer

TIMEOUT = 15.0


def jpy(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="JPY")


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def violated_fields(error: grpc.aio.AioRpcError) -> set[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return {violation.field for violation in bad.field_violations}
    return set()


async def merchant_with_store(cluster: Cluster) -> tuple[Any, tuple[tuple[str, str], ...], str]:
    register = await a_register(cluster)
    return register.stub, register.metadata, register.store_id


async def funded_wallet_with_code(
    cluster: Cluster, identity: IdentityDriver, wallet: Any, amount: int
) -> tuple[Payer, str]:
    """A payer who topped up ``amount`` by card, and their live payment code."""
    payer, _ = await funded_payer(cluster, identity, wallet, amount)
    return payer, await payer.payment_code()


async def balance_of(payer: Payer) -> int:
    return int((await payer.balance()).wallet.balance.amount_minor)


async def test_a_hundred_registers_capturing_one_code_at_once_succeed_exactly_once(
    running: Cluster, identity: IdentityDriver, wallet: Any
) -> None:
    pos, merchant_key, store_id = await merchant_with_store(running)
    # Under risk's 10,000 challenge of a new card's first top-up.
    payer, code = await funded_wallet_with_code(running, identity, wallet, 9_000)

    async def capture(i: int) -> Any:
        return await pos.CapturePayment(
            wallet_pb2.CapturePaymentRequest(
                code=code,
                amount=jpy(500),
                store_id=store_id,
                basket_categories=[risk_pb2.GOODS_CATEGORY_FOOD],
                idempotency_key=f"receipt-{i}",
            ),
            metadata=merchant_key,
            timeout=TIMEOUT,
        )

    results = await asyncio.gather(*(capture(i) for i in range(100)), return_exceptions=True)

    captured = [r for r in results if isinstance(r, wallet_pb2.CapturePaymentResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(captured) == 1, [r for r in results if not isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 99
    assert {r.code() for r in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    # Risk's payment-velocity rule may refuse some of the burst before the code is
    # even tried; either way none of them moves money.
    assert {reason_of(r) for r in refused} <= {"CODE_INVALID", "RISK_DENIED"}
    assert "CODE_INVALID" in {reason_of(r) for r in refused}
    assert await balance_of(payer) == 8_500


async def test_a_capture_replayed_with_its_key_returns_the_first_payment_and_a_refund_cannot_exceed_it(  # noqa: E501
    running: Cluster, identity: IdentityDriver, wallet: Any
) -> None:
    pos, merchant_key, store_id = await merchant_with_store(running)
    payer, code = await funded_wallet_with_code(running, identity, wallet, 5_000)
    request = wallet_pb2.CapturePaymentRequest(
        code=code, amount=jpy(1_200), store_id=store_id, idempotency_key="receipt-42"
    )

    first = await pos.CapturePayment(request, metadata=merchant_key, timeout=TIMEOUT)
    again = await pos.CapturePayment(request, metadata=merchant_key, timeout=TIMEOUT)
    assert again == first
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await pos.CapturePayment(
            wallet_pb2.CapturePaymentRequest(
                code=code, amount=jpy(1_300), store_id=store_id, idempotency_key="receipt-42"
            ),
            metadata=merchant_key,
            timeout=TIMEOUT,
        )
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS

    refund = await pos.RefundPayment(
        wallet_pb2.RefundPaymentRequest(
            payment_movement_id=first.payment.movement_id,
            amount=jpy(1_000),
            reason="returned goods",
            idempotency_key="refund-1",
        ),
        metadata=merchant_key,
        timeout=TIMEOUT,
    )
    assert refund.payment.refunded.amount_minor == 1_000
    with pytest.raises(grpc.aio.AioRpcError) as too_much:
        await pos.RefundPayment(
            wallet_pb2.RefundPaymentRequest(
                payment_movement_id=first.payment.movement_id,
                amount=jpy(201),
                idempotency_key="refund-2",
            ),
            metadata=merchant_key,
            timeout=TIMEOUT,
        )
    assert too_much.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(too_much.value) == "REFUND_EXCEEDS_PAYMENT"
    assert await balance_of(payer) == 4_800

    report = await running.stub("wallet", as_="operator").Reconcile(
        wallet_pb2.ReconcileRequest(), timeout=TIMEOUT
    )
    assert report.balanced
    assert report.ledger_sum_minor == 0


async def test_bad_input_names_every_wrong_field_and_changes_nothing(running: Cluster) -> None:
    pos, merchant_key, _ = await merchant_with_store(running)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await pos.CapturePayment(
            wallet_pb2.CapturePaymentRequest(
                code="12ab",
                amount=common_pb2.Money(amount_minor=-5, currency="USD"),
                store_id="not-a-uuid",
                idempotency_key="",
            ),
            metadata=merchant_key,
            timeout=TIMEOUT,
        )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(refused.value) == {
        "code",
        "amount.currency",
        "amount.amount_minor",
        "store_id",
        "idempotency_key",
    }


async def test_a_register_without_a_valid_merchant_key_is_refused(
    running: Cluster, identity: IdentityDriver, wallet: Any
) -> None:
    _, _, store_id = await merchant_with_store(running)
    _, code = await funded_wallet_with_code(running, identity, wallet, 1_000)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.stub("wallet", as_="pos").CapturePayment(
            wallet_pb2.CapturePaymentRequest(
                code=code, amount=jpy(100), store_id=store_id, idempotency_key="k"
            ),
            metadata=(("x-merchant-key", "guessed"),),
            timeout=TIMEOUT,
        )

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(refused.value) == "MERCHANT_KEY_INVALID"


async def test_suspending_cash_top_ups_through_risk_refuses_the_next_one_with_the_reason(
    running: Cluster, identity: IdentityDriver, wallet: Any
) -> None:
    pos, merchant_key, store_id = await merchant_with_store(running)
    payer = await identity.new_payer(wallet)
    await payer.enroll()

    async def cash_code() -> str:
        reply = await wallet.IssueCashTopUpCode(
            wallet_pb2.IssueCashTopUpCodeRequest(
                channel=risk_pb2.TOP_UP_CHANNEL_CASH_REGISTER, client=payer.client
            ),
            metadata=payer.metadata,
            timeout=TIMEOUT,
        )
        return str(reply.code)

    async def accept(code: str, key: str) -> Any:
        return await pos.AcceptCashTopUp(
            wallet_pb2.AcceptCashTopUpRequest(
                code=code, amount=jpy(3_000), store_id=store_id, idempotency_key=key
            ),
            metadata=merchant_key,
            timeout=TIMEOUT,
        )

    accepted = await accept(await cash_code(), "before")
    assert accepted.top_up.balance_after.amount_minor == 3_000
    # Issued before the switch flips: the register presents it after.
    code = await cash_code()

    await running.stub("risk", as_="operator").SetPolicy(
        risk_pb2.SetPolicyRequest(
            top_up_channel=risk_pb2.TopUpChannelChange(
                channel=risk_pb2.TOP_UP_CHANNEL_CASH_REGISTER, suspended=True
            ),
            reason="cash top-up fraud wave",
        ),
        timeout=TIMEOUT,
    )

    reason = ""
    async with asyncio.timeout(TIMEOUT):
        while reason != "CHANNEL_SUSPENDED":
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                # A 3,000 top-up over a 3,000 balance stays under every limit, so until
                # the switch reaches the wallet this one would be accepted: a larger
                # amount keeps the probe from moving money.
                await pos.AcceptCashTopUp(
                    wallet_pb2.AcceptCashTopUpRequest(
                        code=code,
                        amount=jpy(10_000_000),
                        store_id=store_id,
                        idempotency_key=str(uuid.uuid4()),
                    ),
                    metadata=merchant_key,
                    timeout=TIMEOUT,
                )
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            reason = reason_of(refused.value)
            await asyncio.sleep(0.05)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await accept(code, "after")
    assert reason_of(refused.value) == "CHANNEL_SUSPENDED"
    assert await balance_of(payer) == 3_000


async def test_operators_freeze_and_unfreeze_a_wallet_with_a_reason(
    running: Cluster, identity: IdentityDriver, wallet: Any
) -> None:
    pos, merchant_key, store_id = await merchant_with_store(running)
    payer, code = await funded_wallet_with_code(running, identity, wallet, 1_000)
    wallet_id = (await payer.balance()).wallet.wallet_id
    operator = running.stub("wallet", as_="operator")

    frozen = await operator.FreezeWallet(
        wallet_pb2.FreezeWalletRequest(wallet_id=str(wallet_id), reason="analyst: odd pattern"),
        timeout=TIMEOUT,
    )
    assert frozen.wallet.status == wallet_pb2.WALLET_STATUS_FROZEN
    assert frozen.wallet.frozen_reason == "analyst: odd pattern"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await pos.CapturePayment(
            wallet_pb2.CapturePaymentRequest(
                code=code, amount=jpy(100), store_id=store_id, idempotency_key="k"
            ),
            metadata=merchant_key,
            timeout=TIMEOUT,
        )
    assert reason_of(refused.value) == "CODE_INVALID"
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await operator.UnfreezeWallet(
            wallet_pb2.UnfreezeWalletRequest(wallet_id=str(wallet_id)), timeout=TIMEOUT
        )
    assert violated_fields(no_reason.value) == {"reason"}

    thawed = await operator.UnfreezeWallet(
        wallet_pb2.UnfreezeWalletRequest(wallet_id=str(wallet_id), reason="cleared"),
        timeout=TIMEOUT,
    )
    assert thawed.wallet.status == wallet_pb2.WALLET_STATUS_ACTIVE


async def test_after_a_wind_down_every_balance_is_paid_out_or_listed_and_reconcile_is_exact(
    running: Cluster, identity: IdentityDriver, wallet: Any
) -> None:
    operator = running.stub("wallet", as_="operator")
    payers = [
        (await funded_payer(running, identity, wallet, amount))[0]
        for amount in (1_000, 2_500, 4_000)
    ]
    wallet_ids = [(await payer.balance()).wallet.wallet_id for payer in payers]
    deadline = Timestamp()
    deadline.GetCurrentTime()

    with pytest.raises(grpc.aio.AioRpcError) as too_early:
        await operator.NotifyBalanceHolders(
            wallet_pb2.NotifyBalanceHoldersRequest(claim_deadline=deadline), timeout=TIMEOUT
        )
    assert reason_of(too_early.value) == "NOT_IN_WIND_DOWN"

    await running.stub("risk", as_="operator").SetPolicy(
        risk_pb2.SetPolicyRequest(wind_down=True, reason="service ends"), timeout=TIMEOUT
    )
    notified = None
    async with asyncio.timeout(TIMEOUT):
        while notified is None:
            try:
                notified = await operator.NotifyBalanceHolders(
                    wallet_pb2.NotifyBalanceHoldersRequest(claim_deadline=deadline),
                    timeout=TIMEOUT,
                )
            except grpc.aio.AioRpcError as error:
                assert reason_of(error) == "NOT_IN_WIND_DOWN"
                await asyncio.sleep(0.05)
    assert notified.notified == 3

    first = payers[0]
    await wallet.RegisterPayoutAccount(
        wallet_pb2.RegisterPayoutAccountRequest(
            bank_code="0001",
            branch_code="001",
            account_number="7654321",
            holder_name="スズキ ハナコ",
        ),
        metadata=first.metadata,
        timeout=TIMEOUT,
    )
    paid = await wallet.ClaimPayout(
        wallet_pb2.ClaimPayoutRequest(idempotency_key="claim"),
        metadata=first.metadata,
        timeout=TIMEOUT,
    )
    unclaimed = await operator.ListUnclaimedBalances(
        wallet_pb2.ListUnclaimedBalancesRequest(), timeout=TIMEOUT
    )
    report = await operator.Reconcile(wallet_pb2.ReconcileRequest(), timeout=TIMEOUT)

    assert paid.amount.amount_minor == 1_000
    assert {b.wallet_id for b in unclaimed.balances} == set(wallet_ids[1:])
    assert unclaimed.total.amount_minor == 6_500
    assert unclaimed.wallet_count == 2
    assert all(b.HasField("notified_at") for b in unclaimed.balances)
    assert report.balanced
    assert report.ledger_sum_minor == 0
    assert not report.differences


async def wallet_follows_payment_switch(risk: Any, payer: Payer, *, suspended: bool) -> str:
    """Flip store payments through risk and wait until the wallet applies it; the
    payer's live payment code once payments are open again."""
    await risk.SetPolicy(
        risk_pb2.SetPolicyRequest(payments_suspended=suspended, reason="fallback drill"),
        timeout=TIMEOUT,
    )
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                code = await payer.payment_code()
            except grpc.aio.AioRpcError as error:
                assert reason_of(error) == "PAYMENTS_SUSPENDED"
                if suspended:
                    return ""
            else:
                if not suspended:
                    return str(code)
            await asyncio.sleep(0.05)


async def test_with_risk_away_only_payments_under_the_fallback_limit_go_through(
    running: Cluster, identity: IdentityDriver, wallet: Any
) -> None:
    pos, merchant_key, store_id = await merchant_with_store(running)
    payer, _ = await funded_payer(running, identity, wallet, 9_000)
    limit = 3_000
    risk = running.stub("risk", as_="operator")
    await risk.SetPolicy(
        risk_pb2.SetPolicyRequest(payment_fallback_limit=jpy(limit), reason="fallback drill"),
        timeout=TIMEOUT,
    )
    # Once the wallet has applied the two later switches it holds the new limit too.
    await wallet_follows_payment_switch(risk, payer, suspended=True)
    code = await wallet_follows_payment_switch(risk, payer, suspended=False)
    await running.stop("risk")

    with pytest.raises(grpc.aio.AioRpcError) as large:
        await pos.CapturePayment(
            wallet_pb2.CapturePaymentRequest(
                code=code, amount=jpy(limit + 1), store_id=store_id, idempotency_key="big"
            ),
            metadata=merchant_key,
            timeout=TIMEOUT,
        )
    small = await pos.CapturePayment(
        wallet_pb2.CapturePaymentRequest(
            code=code, amount=jpy(limit), store_id=store_id, idempotency_key="small"
        ),
        metadata=merchant_key,
        timeout=TIMEOUT,
    )

    assert reason_of(large.value) == "RISK_UNAVAILABLE"
    assert small.payment.amount.amount_minor == limit
    assert await balance_of(payer) == 9_000 - limit
