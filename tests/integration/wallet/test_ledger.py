"""The ledger's money invariants, proved against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import asyncpg
import pytest

from services.runtime.errors import AlreadyExists, FailedPrecondition
from services.wallet.domain.codes import fingerprint
from services.wallet.domain.ledger import CARD_CLEARING, POINTS_CLEARING
from services.wallet.domain.limits import Limits
from services.wallet.storage import Storage
from tests.integration.wallet.helpers import (
    a_store,
    capture,
    funded_wallet,
    payment_code,
    points_top_up,
)


async def test_two_hundred_concurrent_top_ups_never_exceed_the_daily_limit(
    wallet_store: Storage,
) -> None:
    limits = Limits(
        per_top_up=10_000,
        day_amount=50_000,
        day_count=1_000,
        month_amount=1_000_000,
        balance_cap=1_000_000,
        new_wallet_days=0,
        new_wallet_day_amount=50_000,
        new_source_per_top_up=10_000,
    )
    store = Storage(wallet_store.pool, limits)
    wallet = await store.wallets.enroll("payer-daily")

    results = await asyncio.gather(
        *(points_top_up(store, wallet.id, 1_000) for _ in range(200)), return_exceptions=True
    )

    succeeded = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, FailedPrecondition)]
    assert len(succeeded) == 50
    assert len(refused) == 150
    assert {r.reason for r in refused} == {"LIMIT_EXCEEDED"}
    assert {r.metadata["limit"] for r in refused} == {"day_amount"}
    assert (await store.wallets.wallet_by_id(wallet.id)).balance == 50_000
    assert (await store.ledger.reconcile()).balanced


async def test_concurrent_top_ups_never_exceed_the_daily_count(wallet_store: Storage) -> None:
    limits = Limits(
        per_top_up=10_000,
        day_amount=1_000_000,
        day_count=3,
        month_amount=1_000_000,
        balance_cap=1_000_000,
        new_wallet_days=0,
        new_wallet_day_amount=1_000_000,
        new_source_per_top_up=10_000,
    )
    store = Storage(wallet_store.pool, limits)
    wallet = await store.wallets.enroll("payer-count")

    results = await asyncio.gather(
        *(points_top_up(store, wallet.id, 100) for _ in range(30)), return_exceptions=True
    )

    assert sum(isinstance(r, dict) for r in results) == 3
    assert (await store.wallets.wallet_by_id(wallet.id)).balance == 300


async def test_pending_card_top_ups_count_toward_the_limits_while_charges_are_in_flight(
    wallet_store: Storage,
) -> None:
    # A new card's own allowance is set above the day's, so the day limit is the one tested.
    store = Storage(
        wallet_store.pool, dataclasses.replace(wallet_store.limits, new_source_per_top_up=100_000)
    )
    wallet = await store.wallets.enroll("payer-card")
    source = await store.funding_sources.add_funding_source(wallet.id, "tok_visa", "visa", "4242")

    async def reserve(key: str) -> object:
        return await store.top_ups.reserve(
            wallet_id=wallet.id,
            funding_source_id=source.id,
            amount=10_000,
            session_id="s",
            idempotency_key=key,
            request_hash=fingerprint({"k": key}),
        )

    results = await asyncio.gather(*(reserve(f"k{i}") for i in range(40)), return_exceptions=True)

    # The day allows 100,000: ten reservations of 10,000 fit, whatever their charges do.
    assert sum(not isinstance(r, Exception) for r in results) == 10
    assert all(
        isinstance(r, FailedPrecondition) and r.reason == "LIMIT_EXCEEDED"
        for r in results
        if isinstance(r, Exception)
    )


async def test_a_card_top_up_posts_once_even_when_finished_twice(wallet_store: Storage) -> None:
    wallet = await wallet_store.wallets.enroll("payer-finish")
    source = await wallet_store.funding_sources.add_funding_source(
        wallet.id, "tok_visa", "visa", "4242"
    )
    pending = await wallet_store.top_ups.reserve(
        wallet_id=wallet.id,
        funding_source_id=source.id,
        amount=5_000,
        session_id="s",
        idempotency_key="once",
        request_hash="h",
    )
    assert not isinstance(pending, dict)

    first, second = await asyncio.gather(
        wallet_store.top_ups.finish(pending.top_up_id, "ch_1"),
        wallet_store.top_ups.finish(pending.top_up_id, "ch_1"),
    )

    assert first == second
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 5_000
    replay = await wallet_store.top_ups.reserve(
        wallet_id=wallet.id,
        funding_source_id=source.id,
        amount=5_000,
        session_id="s",
        idempotency_key="once",
        request_hash="h",
    )
    assert replay == first
    # The card is no longer new: its next top-up may exceed the first-top-up limit.
    assert not (await wallet_store.funding_sources.funding_source(wallet.id, source.id)).new_source


async def test_the_first_top_up_from_a_new_card_has_a_lower_limit(
    wallet_store: Storage,
) -> None:
    wallet = await wallet_store.wallets.enroll("payer-new-card")
    source = await wallet_store.funding_sources.add_funding_source(
        wallet.id, "tok_new", "visa", "1111"
    )

    with pytest.raises(FailedPrecondition) as refused:
        await wallet_store.top_ups.reserve(
            wallet_id=wallet.id,
            funding_source_id=source.id,
            amount=10_001,
            session_id="s",
            idempotency_key="big",
            request_hash="h",
        )

    assert refused.value.metadata["limit"] == "new_source_per_top_up"


async def test_a_hundred_concurrent_captures_of_one_code_succeed_exactly_once(
    wallet_store: Storage,
) -> None:
    wallet = await funded_wallet(wallet_store, 10_000)
    shops = [await a_store(wallet_store, f"Chain {i}") for i in range(4)]
    code = await payment_code(wallet_store, wallet.id)

    results = await asyncio.gather(
        *(capture(wallet_store, shops[i % 4], code, 700) for i in range(100)),
        return_exceptions=True,
    )

    captured = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(captured) == 1
    assert all(isinstance(r, FailedPrecondition) and r.reason == "CODE_INVALID" for r in refused)
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 9_300


async def test_a_new_payment_code_voids_the_previous_one(wallet_store: Storage) -> None:
    wallet = await funded_wallet(wallet_store, 1_000)
    shop = await a_store(wallet_store)
    old = await payment_code(wallet_store, wallet.id)
    new = await payment_code(wallet_store, wallet.id)

    with pytest.raises(FailedPrecondition, match="unknown, used or expired"):
        await capture(wallet_store, shop, old, 100)
    assert (await capture(wallet_store, shop, new, 100))["amount"] == 100


async def test_a_capture_racing_a_new_code_for_the_same_wallet_never_deadlocks(
    wallet_store: Storage,
) -> None:
    wallet = await funded_wallet(wallet_store, 10_000)
    shop = await a_store(wallet_store)
    for _ in range(30):
        code = await payment_code(wallet_store, wallet.id)
        # The register captures the shown code while the app issues the next one.
        outcomes = await asyncio.gather(
            capture(wallet_store, shop, code, 10),
            payment_code(wallet_store, wallet.id),
            return_exceptions=True,
        )
        assert not any(isinstance(o, asyncpg.DeadlockDetectedError) for o in outcomes), outcomes
        captured = outcomes[0]
        assert isinstance(captured, dict) or (
            isinstance(captured, FailedPrecondition) and captured.reason == "CODE_INVALID"
        ), captured


async def test_replaying_an_idempotency_key_returns_the_first_result_and_moves_money_once(
    wallet_store: Storage,
) -> None:
    wallet = await wallet_store.wallets.enroll("payer-replay")

    results = await asyncio.gather(
        *(points_top_up(wallet_store, wallet.id, 3_000, key="same-key") for _ in range(10))
    )

    assert all(result == results[0] for result in results)
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 3_000
    lines, _ = await wallet_store.ledger.statement(wallet.id, limit=50, after=None)
    assert len(lines) == 1


async def test_a_capture_replayed_with_its_key_returns_the_first_payment(
    wallet_store: Storage,
) -> None:
    wallet = await funded_wallet(wallet_store, 5_000)
    shop = await a_store(wallet_store)
    code = await payment_code(wallet_store, wallet.id)

    first = await capture(wallet_store, shop, code, 1_200, key="register-7-receipt-42")
    again = await capture(wallet_store, shop, code, 1_200, key="register-7-receipt-42")

    assert again == first
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 3_800


async def test_the_same_key_with_a_different_body_is_refused(wallet_store: Storage) -> None:
    wallet = await wallet_store.wallets.enroll("payer-reuse")
    await points_top_up(wallet_store, wallet.id, 1_000, key="k")

    with pytest.raises(AlreadyExists) as refused:
        await points_top_up(wallet_store, wallet.id, 2_000, key="k")

    assert refused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 1_000


async def test_the_database_refuses_a_direct_update_that_makes_a_balance_negative(
    wallet_store: Storage,
) -> None:
    wallet = await funded_wallet(wallet_store, 500)

    with pytest.raises(asyncpg.CheckViolationError, match="wallet_balance_never_negative"):
        await wallet_store.pool.execute(
            "update ledger_accounts set balance = balance - 501 where id = $1", wallet.id
        )

    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 500


async def test_the_database_refuses_postings_that_overdraw_a_wallet(
    wallet_store: Storage,
) -> None:
    wallet = await funded_wallet(wallet_store, 500)
    entry = uuid.uuid4()

    with pytest.raises(asyncpg.CheckViolationError):
        async with wallet_store.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "insert into journal_entries (id, kind, wallet_id) values ($1, 'payment', $2)",
                entry,
                wallet.id,
            )
            await conn.execute(
                "insert into postings (entry_id, account_id, amount)"
                " values ($1, $2, -600), ($1, $3, 600)",
                entry,
                wallet.id,
                CARD_CLEARING,
            )

    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 500


async def test_an_entry_whose_postings_do_not_sum_to_zero_is_refused_at_commit(
    wallet_store: Storage,
) -> None:
    wallet = await wallet_store.wallets.enroll("payer-unbalanced")
    entry = uuid.uuid4()

    with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
        async with wallet_store.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "insert into journal_entries (id, kind, wallet_id) values ($1, 'top_up', $2)",
                entry,
                wallet.id,
            )
            await conn.execute(
                "insert into postings (entry_id, account_id, amount)"
                " values ($1, $2, 1000), ($1, $3, -999)",
                entry,
                wallet.id,
                POINTS_CLEARING,
            )

    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 0
    assert (await wallet_store.ledger.reconcile()).balanced


async def test_postings_cannot_be_rewritten(wallet_store: Storage) -> None:
    await funded_wallet(wallet_store, 700)

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await wallet_store.pool.execute("update postings set amount = amount * 2")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await wallet_store.pool.execute("delete from postings")


async def test_reconcile_reports_a_stored_balance_that_differs_from_its_postings(
    wallet_store: Storage,
) -> None:
    honest = await funded_wallet(wallet_store, 1_000)
    tampered = await funded_wallet(wallet_store, 1_000)
    assert (await wallet_store.ledger.reconcile()).balanced

    await wallet_store.pool.execute(
        "update ledger_accounts set balance = balance + 5 where id = $1", tampered.id
    )
    report = await wallet_store.ledger.reconcile()

    assert not report.balanced
    assert report.differences == [(tampered.id, 1_005, 1_000)]
    assert honest.id not in [difference[0] for difference in report.differences]
    assert report.ledger_sum == 0


async def test_a_refund_never_exceeds_its_payment(wallet_store: Storage) -> None:
    wallet = await funded_wallet(wallet_store, 5_000)
    shop = await a_store(wallet_store)
    payment = await capture(wallet_store, shop, await payment_code(wallet_store, wallet.id), 1_000)
    payment_id = uuid.UUID(payment["movement_id"])

    async def refund(amount: int) -> dict[str, object]:
        return await wallet_store.refunds.refund(
            payment_id=payment_id,
            amount=amount,
            merchant_id=shop.merchant_id,
            idempotency_key=str(uuid.uuid4()),
            request_hash=fingerprint({"amount": amount}),
        )

    results = await asyncio.gather(*(refund(300) for _ in range(20)), return_exceptions=True)

    assert sum(isinstance(r, dict) for r in results) == 3
    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, FailedPrecondition) for r in refused)
    assert {r.reason for r in refused if isinstance(r, FailedPrecondition)} == {
        "REFUND_EXCEEDS_PAYMENT"
    }
    last = await refund(100)
    assert last["payment"]["refunded"] == 1_000  # type: ignore[index]
    with pytest.raises(FailedPrecondition):
        await refund(1)
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 5_000
    with pytest.raises(asyncpg.CheckViolationError, match="refund_never_exceeds_payment"):
        await wallet_store.pool.execute(
            "update payments set refunded = amount + 1 where entry_id = $1", payment_id
        )
    assert (await wallet_store.ledger.reconcile()).balanced


async def test_a_store_cannot_refund_another_merchants_payment(wallet_store: Storage) -> None:
    wallet = await funded_wallet(wallet_store, 5_000)
    shop, other = await a_store(wallet_store, "A"), await a_store(wallet_store, "B")
    payment = await capture(wallet_store, shop, await payment_code(wallet_store, wallet.id), 1_000)

    with pytest.raises(Exception, match="no such payment"):
        await wallet_store.refunds.refund(
            payment_id=uuid.UUID(payment["movement_id"]),
            amount=100,
            merchant_id=other.merchant_id,
            idempotency_key="k",
            request_hash="h",
        )


async def test_a_payment_larger_than_the_balance_is_refused_and_the_code_stays_usable(
    wallet_store: Storage,
) -> None:
    wallet = await funded_wallet(wallet_store, 1_000)
    shop = await a_store(wallet_store)
    code = await payment_code(wallet_store, wallet.id)

    with pytest.raises(FailedPrecondition, match="balance is too low"):
        await capture(wallet_store, shop, code, 1_001)

    assert (await capture(wallet_store, shop, code, 1_000))["amount"] == 1_000
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 0


async def test_a_frozen_wallet_cannot_pay(wallet_store: Storage) -> None:
    wallet = await funded_wallet(wallet_store, 1_000)
    shop = await a_store(wallet_store)
    code = await payment_code(wallet_store, wallet.id)

    await wallet_store.wallets.set_status(wallet.id, "frozen", "reported by the person")

    # Freezing voids live codes, so the register sees the code as dead.
    with pytest.raises(FailedPrecondition, match="unknown, used or expired"):
        await capture(wallet_store, shop, code, 100)
    with pytest.raises(FailedPrecondition) as refused:
        await payment_code(wallet_store, wallet.id)
    assert refused.value.reason == "WALLET_FROZEN"


async def test_many_stores_of_one_merchant_capture_at_once_and_reconcile_exactly(
    wallet_store: Storage,
) -> None:
    merchant, _ = await wallet_store.merchants.register_merchant("Big Chain", "5411")
    shops = [
        await wallet_store.merchants.store_of(
            merchant.id,
            await wallet_store.merchants.register_store(merchant.id, f"s{i}", f"Store {i}"),
        )
        for i in range(10)
    ]
    wallets = [await funded_wallet(wallet_store, 2_000) for _ in range(30)]
    codes = [await payment_code(wallet_store, wallet.id) for wallet in wallets]

    await asyncio.gather(
        *(capture(wallet_store, shops[i % 10], code, 1_500) for i, code in enumerate(codes))
    )

    merchant_balance = await wallet_store.pool.fetchval(
        "select sum(amount) from postings where account_id = $1", merchant.id
    )
    assert merchant_balance == 30 * 1_500
    report = await wallet_store.ledger.reconcile()
    assert report.balanced
    assert report.ledger_sum == 0
