"""Compensation and wind-down payouts against a real database and the sandbox processor."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.devstack.card_processor import SandboxProcessor
from services.runtime.errors import FailedPrecondition
from services.wallet.clients.card_processor import CardProcessor
from services.wallet.storage import Storage
from services.wallet.use_cases.refunds import compensate_movements
from services.wallet.use_cases.top_ups import fund
from tests.integration.wallet.helpers import a_store, capture, funded_wallet, payment_code


@pytest_asyncio.fixture
async def sandbox() -> AsyncIterator[SandboxProcessor]:
    processor = SandboxProcessor()
    await processor.start()
    try:
        yield processor
    finally:
        await processor.stop()


@pytest_asyncio.fixture
async def processor(sandbox: SandboxProcessor) -> AsyncIterator[CardProcessor]:
    client = CardProcessor(sandbox.url, timeout_seconds=2)
    try:
        yield client
    finally:
        await client.close()


async def test_compensating_a_case_twice_pays_once(
    wallet_store: Storage, sandbox: SandboxProcessor, processor: CardProcessor
) -> None:
    # The incident: an attacker tops up the victim's wallet from the victim's card
    # and spends it in a store.
    wallet = await funded_wallet(wallet_store, 2_000)
    token, _ = sandbox.tokenise("4242424242424242")
    card = await wallet_store.funding_sources.add_funding_source(wallet.id, token, "visa", "4242")
    top_up = await fund(
        wallet_store.top_ups,
        processor,
        wallet_id=wallet.id,
        funding_source_id=card.id,
        amount=10_000,
        session_id="attacker",
        idempotency_key="a1",
        request_hash="h",
    )
    shop = await a_store(wallet_store)
    spent = await capture(wallet_store, shop, await payment_code(wallet_store, wallet.id), 11_000)
    case_id = uuid.uuid4()
    movements = [uuid.UUID(top_up["movement_id"]), uuid.UUID(spent["movement_id"])]

    first = await compensate_movements(
        wallet_store.compensation,
        processor,
        case_id=case_id,
        movement_ids=movements,
        reason="confirmed",
    )
    second = await compensate_movements(
        wallet_store.compensation,
        processor,
        case_id=case_id,
        movement_ids=movements,
        reason="confirmed",
    )

    assert first.newly_paid == 2
    assert second.newly_paid == 0
    assert [(line.method, line.amount) for line in second.lines] == [
        ("wallet_credit", 11_000),
        ("card_refund", 10_000),
    ]
    assert [line.compensation_entry_id for line in first.lines] == [
        line.compensation_entry_id for line in second.lines
    ]
    # The card got its 10,000 back once; the wallet holds what the victim had.
    assert [charge.refunded for charge in sandbox.charges.values()] == [10_000]
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 2_000
    traced = await wallet_store.pool.fetchval(
        "select count(*) from journal_entries where case_id = $1", case_id
    )
    assert traced == 2
    assert (await wallet_store.ledger.reconcile()).balanced


async def test_a_declined_card_frees_its_reservation_and_a_timeout_keeps_it(
    wallet_store: Storage, sandbox: SandboxProcessor, processor: CardProcessor
) -> None:
    wallet = await wallet_store.wallets.enroll("payer-declined")
    token, _ = sandbox.tokenise("4000000000000002")
    card = await wallet_store.funding_sources.add_funding_source(wallet.id, token, "visa", "0002")

    async def top_up(key: str) -> dict[str, object]:
        return await fund(
            wallet_store.top_ups,
            processor,
            wallet_id=wallet.id,
            funding_source_id=card.id,
            amount=5_000,
            session_id="s",
            idempotency_key=key,
            request_hash="h",
        )

    sandbox.decline_next = 1
    with pytest.raises(FailedPrecondition) as declined:
        await top_up("k1")
    assert declined.value.reason == "CARD_DECLINED"
    sandbox.fail_next = 1
    with pytest.raises(Exception, match="did not answer"):
        await top_up("k2")
    # Retrying the timed-out request completes it; the declined key is free again.
    assert (await top_up("k2"))["amount"] == 5_000
    assert (await top_up("k1"))["balance_after"] == 10_000
    assert len(sandbox.charges) == 2


async def test_after_a_wind_down_every_balance_is_paid_out_or_listed_as_unclaimed(
    wallet_store: Storage,
) -> None:
    wallets = [await funded_wallet(wallet_store, 1_000 * (i + 1)) for i in range(5)]
    await wallet_store.wallets.enroll("payer-empty")
    notified = await wallet_store.payouts.mark_balance_holders_notified("2030-01-31")
    assert notified == 5
    assert await wallet_store.payouts.mark_balance_holders_notified("2030-01-31") == 0

    for wallet in wallets[:3]:
        await wallet_store.payouts.register_payout_account(
            wallet.id,
            bank_code="0001",
            branch_code="123",
            account_number="1234567",
            holder_name="ヤマダ タロウ",
        )
        await wallet_store.payouts.claim_payout(
            wallet.id, idempotency_key="payout", request_hash="all"
        )
        # Claiming again with the same key returns the first payout.
        await wallet_store.payouts.claim_payout(
            wallet.id, idempotency_key="payout", request_hash="all"
        )

    page, total, count, more = await wallet_store.payouts.unclaimed(limit=50, after=None)
    assert {row.wallet_id for row in page} == {wallets[3].id, wallets[4].id}
    assert (total, count, more) == (4_000 + 5_000, 2, None)
    paid = await wallet_store.pool.fetchval("select sum(amount) from payouts")
    assert paid + total == sum(1_000 * (i + 1) for i in range(5))
    assert (await wallet_store.ledger.reconcile()).balanced
    with pytest.raises(FailedPrecondition) as nothing_left:
        await wallet_store.payouts.claim_payout(
            wallets[0].id, idempotency_key="again", request_hash="all"
        )
    assert nothing_left.value.reason == "NOTHING_TO_PAY_OUT"


async def test_a_payout_needs_a_registered_bank_account(wallet_store: Storage) -> None:
    wallet = await funded_wallet(wallet_store, 1_000)

    with pytest.raises(FailedPrecondition) as refused:
        await wallet_store.payouts.claim_payout(wallet.id, idempotency_key="k", request_hash="all")

    assert refused.value.reason == "PAYOUT_ACCOUNT_REQUIRED"
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 1_000
