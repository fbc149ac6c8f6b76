"""Money promised but not yet moved (card charges in flight, holds) is never promised twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio

from services.devstack.card_processor import SandboxProcessor
from services.runtime.errors import FailedPrecondition, Unavailable
from services.wallet.clients.card_processor import CardProcessor
from services.wallet.domain.codes import fingerprint
from services.wallet.domain.limits import Limits
from services.wallet.storage import Storage
from services.wallet.use_cases.top_ups import fund
from tests.integration.wallet.helpers import (
    a_store,
    capture,
    funded_wallet,
    payment_code,
    points_top_up,
)

WAIT = 15.0


@pytest_asyncio.fixture
async def sandbox() -> AsyncIterator[SandboxProcessor]:
    processor = SandboxProcessor()
    await processor.start()
    try:
        yield processor
    finally:
        await processor.stop()


@pytest_asyncio.fixture
async def impatient_processor(sandbox: SandboxProcessor) -> AsyncIterator[CardProcessor]:
    """A processor client that gives up quickly, so a hung charge stays in flight."""
    client = CardProcessor(sandbox.url, timeout_seconds=0.5)
    try:
        yield client
    finally:
        await client.close()


async def test_card_top_ups_in_flight_count_toward_the_balance_cap(
    wallet_store: Storage, sandbox: SandboxProcessor, impatient_processor: CardProcessor
) -> None:
    limits = Limits(
        per_top_up=50_000,
        day_amount=1_000_000,
        day_count=1_000,
        month_amount=1_000_000,
        balance_cap=20_000,
        new_wallet_days=0,
        new_wallet_day_amount=1_000_000,
        new_source_per_top_up=10_000,
    )
    store = Storage(wallet_store.pool, limits)
    wallet = await store.wallets.enroll("payer-near-the-cap")
    token, _ = sandbox.tokenise("4242424242424242")
    card = await store.funding_sources.add_funding_source(wallet.id, token, "visa", "4242")

    async def top_up(amount: int, key: str) -> dict[str, Any]:
        return await fund(
            store.top_ups,
            impatient_processor,
            wallet_id=wallet.id,
            funding_source_id=card.id,
            amount=amount,
            session_id="s",
            idempotency_key=key,
            request_hash=fingerprint({"amount": amount}),
        )

    await top_up(1_000, "first")  # the card is no longer new
    await points_top_up(store, wallet.id, 9_000)  # 10,000 of the 20,000 cap used
    sandbox.hang_next = 2

    results = await asyncio.gather(top_up(6_000, "a"), top_up(6_000, "b"), return_exceptions=True)

    # One charge hangs and keeps its reservation; the other does not fit beside it.
    assert sorted(type(r).__name__ for r in results) == ["FailedPrecondition", "Unavailable"]
    refused = next(r for r in results if isinstance(r, FailedPrecondition))
    assert refused.metadata["limit"] == "balance_cap"
    sandbox.hang_next = 0
    hung_key, refused_key = ("a", "b") if isinstance(results[0], Unavailable) else ("b", "a")
    assert (await top_up(6_000, hung_key))["balance_after"] == 16_000
    with pytest.raises(FailedPrecondition) as again:
        await top_up(6_000, refused_key)
    assert again.value.metadata["limit"] == "balance_cap"
    assert (await store.wallets.wallet_by_id(wallet.id)).balance == 16_000
    assert len(sandbox.charges) == 2


async def test_a_new_cards_allowance_covers_all_its_first_top_ups_in_flight(
    wallet_store: Storage,
) -> None:
    wallet = await wallet_store.wallets.enroll("payer-many-firsts")
    source = await wallet_store.funding_sources.add_funding_source(
        wallet.id, "tok_new", "visa", "1111"
    )

    async def reserve(key: str) -> object:
        return await wallet_store.top_ups.reserve(
            wallet_id=wallet.id,
            funding_source_id=source.id,
            amount=6_000,
            session_id="s",
            idempotency_key=key,
            request_hash=fingerprint({"k": key}),
        )

    results = await asyncio.gather(*(reserve(f"k{i}") for i in range(5)), return_exceptions=True)

    # The new card may bring 10,000 before its first charge completes, not 10,000 a request.
    reserved = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, FailedPrecondition)]
    assert len(reserved) == 1
    assert len(refused) == 4
    assert {r.metadata["limit"] for r in refused} == {"new_source_per_top_up"}
    assert {r.metadata["largest_top_up"] for r in refused} == {"4000"}


async def _lock_waiters(store: Storage) -> int:
    count: int = await store.pool.fetchval(
        "select count(*) from pg_stat_activity"
        " where datname = current_database() and wait_event_type = 'Lock'"
    )
    return count


async def _until_waiting(store: Storage, count: int) -> None:
    async with asyncio.timeout(WAIT):
        # PostgreSQL offers no event for a backend starting to wait on a lock.
        while await _lock_waiters(store) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_capture_cannot_spend_money_held_for_another_merchant(
    wallet_store: Storage,
) -> None:
    wallet = await funded_wallet(wallet_store, 1_000)
    first_merchant = await a_store(wallet_store, "Family Mart")
    second_merchant = await a_store(wallet_store, "Seven")
    third_merchant = await a_store(wallet_store, "Lawson")

    async def hold(shop: Any, amount: int) -> dict[str, Any]:
        return await wallet_store.payments.authorize(
            code=await payment_code(wallet_store, wallet.id),
            amount=amount,
            store=shop,
            hold=timedelta(minutes=15),
            idempotency_key=str(uuid.uuid4()),
            request_hash="h",
        )

    captured_hold = await hold(first_merchant, 400)
    await hold(second_merchant, 400)  # 200 is left to spend
    code = await payment_code(wallet_store, wallet.id)

    # Force the interleaving a busy system produces by chance: the capture of the
    # first hold commits while the code capture is between reading the wallet and
    # summing its holds.
    async with wallet_store.pool.acquire() as gate, gate.transaction():
        await gate.execute("select 1 from ledger_accounts where id = $1 for update", wallet.id)
        hold_capture = asyncio.create_task(
            wallet_store.payments.capture_authorization(
                authorization_id=uuid.UUID(captured_hold["authorization_id"]),
                amount=400,
                store=first_merchant,
                merchant_name="Family Mart",
                idempotency_key="hold-capture",
                request_hash="h",
            )
        )
        await _until_waiting(wallet_store, 1)

        async def hold_table_briefly() -> None:
            async with wallet_store.pool.acquire() as conn, conn.transaction():
                await conn.execute("lock table authorizations in access exclusive mode")

        table_lock = asyncio.create_task(hold_table_briefly())
        await _until_waiting(wallet_store, 2)
        code_capture = asyncio.create_task(capture(wallet_store, third_merchant, code, 500))
        await _until_waiting(wallet_store, 3)

    results = await asyncio.gather(hold_capture, table_lock, code_capture, return_exceptions=True)

    assert isinstance(results[0], dict)
    assert isinstance(results[2], FailedPrecondition)
    assert results[2].reason == "INSUFFICIENT_BALANCE"
    # The second merchant's 400 is still there to capture.
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 600
    assert (await wallet_store.ledger.reconcile()).balanced
