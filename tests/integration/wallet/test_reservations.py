"""Money promised but not yet moved (card charges in flight, holds) is never promised twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from services.runtime.errors import FailedPrecondition
from services.wallet.storage import WalletStore
from tests.integration.wallet.helpers import (
    a_store,
    capture,
    funded_wallet,
    payment_code,
)

WAIT = 15.0


async def _lock_waiters(store: WalletStore) -> int:
    count: int = await store.pool.fetchval(
        "select count(*) from pg_stat_activity"
        " where datname = current_database() and wait_event_type = 'Lock'"
    )
    return count


async def _until_waiting(store: WalletStore, count: int) -> None:
    async with asyncio.timeout(WAIT):
        # PostgreSQL offers no event for a backend starting to wait on a lock.
        while await _lock_waiters(store) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_capture_cannot_spend_money_held_for_another_merchant(
    wallet_store: WalletStore,
) -> None:
    wallet = await funded_wallet(wallet_store, 1_000)
    first_merchant = await a_store(wallet_store, "Family Mart")
    second_merchant = await a_store(wallet_store, "Seven")
    third_merchant = await a_store(wallet_store, "Lawson")

    async def hold(shop: Any, amount: int) -> dict[str, Any]:
        return await wallet_store.authorize(
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
            wallet_store.capture_authorization(
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
    assert (await wallet_store.wallet_by_id(wallet.id)).balance == 600
    assert (await wallet_store.reconcile()).balanced
