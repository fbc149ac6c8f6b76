"""The wallet over real gRPC, with the real risk and notify beside it.

Store registers (``pos``) and operators need no person token, so those paths run
here end to end. A payer's wallet and codes are set up through the running
wallet's own storage layer; the person-facing paths, with tokens from the real
identity, are in test_person_path.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2

from services.devstack.card_processor import SandboxProcessor
from services.wallet.domain.limits import Limits
from services.wallet.grpc_api import WalletServicer
from services.wallet.storage import Storage
from tests.harness import Cluster
from tests.integration.wallet.helpers import points_top_up

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


@pytest_asyncio.fixture
async def sandbox() -> AsyncIterator[SandboxProcessor]:
    processor = SandboxProcessor()
    await processor.start()
    try:
        yield processor
    finally:
        await processor.stop()


@pytest_asyncio.fixture
async def running(cluster: Cluster, sandbox: SandboxProcessor) -> Cluster:
    await cluster.start("risk", "notify")
    await cluster.start("wallet", env={"WALLET_PROCESSOR_URL": sandbox.url})
    return cluster


def wallet_store(cluster: Cluster) -> Storage:
    """The running wallet's own storage layer, for setting up what a payer would do."""
    generous = Limits(500_000, 1_000_000, 100, 5_000_000, 5_000_000, 0, 1_000_000, 100_000)
    return Storage(cluster.running["wallet"].pool, generous)


async def merchant_with_store(cluster: Cluster) -> tuple[Any, tuple[tuple[str, str], ...], str]:
    operator = cluster.stub("wallet", as_="operator")
    merchant = await operator.RegisterMerchant(
        wallet_pb2.RegisterMerchantRequest(name="コンビニ Mamoru", category="5411"),
        timeout=TIMEOUT,
    )
    shop = await operator.RegisterStore(
        wallet_pb2.RegisterStoreRequest(
            merchant_id=merchant.merchant.merchant_id, store_code="tokyo-001", name="渋谷店"
        ),
        timeout=TIMEOUT,
    )
    return (
        cluster.stub("wallet", as_="pos"),
        (("x-merchant-key", merchant.merchant_key),),
        shop.store_id,
    )


async def funded_wallet_with_code(cluster: Cluster, amount: int) -> tuple[uuid.UUID, str]:
    store = wallet_store(cluster)
    wallet = await store.wallets.enroll(str(uuid.uuid4()))
    await points_top_up(store, wallet.id, amount)
    code, _ = await store.codes.issue_code(
        wallet_id=wallet.id,
        purpose="payment",
        device_id="device-1",
        session_id="session-1",
        lifetime=timedelta(minutes=2),
    )
    return wallet.id, code


async def test_a_hundred_registers_capturing_one_code_at_once_succeed_exactly_once(
    running: Cluster,
) -> None:
    pos, merchant_key, store_id = await merchant_with_store(running)
    wallet_id, code = await funded_wallet_with_code(running, 10_000)

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
    assert (await wallet_store(running).wallets.wallet_by_id(wallet_id)).balance == 9_500


async def test_a_capture_replayed_with_its_key_returns_the_first_payment_and_a_refund_cannot_exceed_it(  # noqa: E501
    running: Cluster,
) -> None:
    pos, merchant_key, store_id = await merchant_with_store(running)
    wallet_id, code = await funded_wallet_with_code(running, 5_000)
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
    assert (await wallet_store(running).wallets.wallet_by_id(wallet_id)).balance == 4_800

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


async def test_a_register_without_a_valid_merchant_key_is_refused(running: Cluster) -> None:
    _, _, store_id = await merchant_with_store(running)
    _, code = await funded_wallet_with_code(running, 1_000)

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
    running: Cluster,
) -> None:
    pos, merchant_key, store_id = await merchant_with_store(running)
    store = wallet_store(running)
    wallet = await store.wallets.enroll(str(uuid.uuid4()))

    async def accept(key: str) -> Any:
        code, _ = await store.codes.issue_code(
            wallet_id=wallet.id,
            purpose="cash_top_up",
            device_id="device-1",
            session_id="session-1",
            lifetime=timedelta(minutes=10),
            channel="cash_register",
        )
        return await pos.AcceptCashTopUp(
            wallet_pb2.AcceptCashTopUpRequest(
                code=code, amount=jpy(3_000), store_id=store_id, idempotency_key=key
            ),
            metadata=merchant_key,
            timeout=TIMEOUT,
        )

    accepted = await accept("before")
    assert accepted.top_up.balance_after.amount_minor == 3_000

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
                await accept(str(uuid.uuid4()))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            reason = reason_of(refused.value)
            await asyncio.sleep(0.05)
    assert (await store.wallets.wallet_by_id(wallet.id)).balance == 3_000


async def test_operators_freeze_and_unfreeze_a_wallet_with_a_reason(running: Cluster) -> None:
    pos, merchant_key, store_id = await merchant_with_store(running)
    wallet_id, code = await funded_wallet_with_code(running, 1_000)
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
    running: Cluster,
) -> None:
    operator = running.stub("wallet", as_="operator")
    store = wallet_store(running)
    balances = [1_000, 2_500, 4_000]
    wallets = []
    for amount in balances:
        wallet = await store.wallets.enroll(str(uuid.uuid4()))
        await points_top_up(store, wallet.id, amount)
        wallets.append(wallet)
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

    await store.payouts.register_payout_account(
        wallets[0].id,
        bank_code="0001",
        branch_code="001",
        account_number="7654321",
        holder_name="スズキ ハナコ",
    )
    await store.payouts.claim_payout(wallets[0].id, idempotency_key="claim", request_hash="all")
    unclaimed = await operator.ListUnclaimedBalances(
        wallet_pb2.ListUnclaimedBalancesRequest(), timeout=TIMEOUT
    )
    report = await operator.Reconcile(wallet_pb2.ReconcileRequest(), timeout=TIMEOUT)

    assert {b.wallet_id for b in unclaimed.balances} == {str(w.id) for w in wallets[1:]}
    assert unclaimed.total.amount_minor == 6_500
    assert unclaimed.wallet_count == 2
    assert all(b.HasField("notified_at") for b in unclaimed.balances)
    assert report.balanced
    assert report.ledger_sum_minor == 0
    assert not report.differences


async def test_with_risk_away_only_payments_under_the_fallback_limit_go_through(
    running: Cluster,
) -> None:
    pos, merchant_key, store_id = await merchant_with_store(running)
    wallet_id, code = await funded_wallet_with_code(running, 20_000)
    # The wallet keeps the last policy risk streamed; its fallback limit applies now.
    servicer = running.running["wallet"].app.servicers[0][1]
    assert isinstance(servicer, WalletServicer)
    view = servicer._risk.policies
    policy = await view.wait_for_version(0, timeout=TIMEOUT)
    limit = policy.payment_fallback_limit.amount_minor
    assert limit > 0
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
    assert (await wallet_store(running).wallets.wallet_by_id(wallet_id)).balance == 20_000 - limit
