"""Points top-ups against a real database and the stand-in loyalty program: the
points are redeemed before anything is credited, and exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from services.devstack.points_program import SandboxPointsProgram
from services.runtime.errors import FailedPrecondition, Unavailable
from services.wallet.clients.points import PointsProgram
from services.wallet.domain.codes import fingerprint
from services.wallet.domain.ledger import POINTS_CLEARING
from services.wallet.domain.wallets import WalletRow
from services.wallet.storage import Storage
from services.wallet.use_cases.top_ups import fund


@pytest_asyncio.fixture
async def loyalty() -> AsyncIterator[SandboxPointsProgram]:
    program = SandboxPointsProgram()
    await program.start()
    try:
        yield program
    finally:
        await program.stop()


@pytest_asyncio.fixture
async def points(loyalty: SandboxPointsProgram) -> AsyncIterator[PointsProgram]:
    """A client that gives up quickly, so a lost answer shows within the test."""
    client = PointsProgram(loyalty.url, timeout_seconds=0.5)
    try:
        yield client
    finally:
        await client.close()


async def convert(
    store: Storage, points: PointsProgram, wallet: WalletRow, amount: int, key: str
) -> dict[str, Any]:
    return await fund(
        store.top_ups,
        points,
        wallet_id=wallet.id,
        amount=amount,
        session_id="s",
        idempotency_key=key,
        request_hash=fingerprint({"points": amount}),
    )


async def test_points_are_redeemed_before_the_wallet_is_credited(
    wallet_store: Storage, loyalty: SandboxPointsProgram, points: PointsProgram
) -> None:
    wallet = await wallet_store.wallets.enroll("member-1")
    loyalty.grant("member-1", 3_000)

    result = await convert(wallet_store, points, wallet, 2_000, "k1")

    assert result["balance_after"] == 2_000
    assert loyalty.balances["member-1"] == 1_000
    assert [r["points"] for r in loyalty.redemptions.values()] == [2_000]
    cleared = await wallet_store.pool.fetchval(
        "select sum(amount) from postings where account_id = $1", POINTS_CLEARING
    )
    assert cleared == -2_000
    assert (await wallet_store.ledger.reconcile()).balanced


async def test_an_unknown_member_or_too_few_points_credits_nothing_and_frees_the_key(
    wallet_store: Storage, loyalty: SandboxPointsProgram, points: PointsProgram
) -> None:
    wallet = await wallet_store.wallets.enroll("member-2")

    with pytest.raises(FailedPrecondition) as unknown:
        await convert(wallet_store, points, wallet, 1_000, "k1")
    loyalty.grant("member-2", 500)
    with pytest.raises(FailedPrecondition) as short:
        await convert(wallet_store, points, wallet, 1_000, "k1")

    assert unknown.value.reason == short.value.reason == "INSUFFICIENT_POINTS"
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 0
    assert (await wallet_store.top_ups.room(wallet.id)).day_count == 1_000  # no reservation is left
    # The refused key is free: once the points are there, the same key succeeds.
    loyalty.grant("member-2", 500)
    assert (await convert(wallet_store, points, wallet, 1_000, "k1"))["balance_after"] == 1_000
    assert loyalty.balances["member-2"] == 0


async def test_a_failed_redemption_moves_no_money_and_its_retry_completes_it(
    wallet_store: Storage, loyalty: SandboxPointsProgram, points: PointsProgram
) -> None:
    wallet = await wallet_store.wallets.enroll("member-3")
    loyalty.grant("member-3", 1_000)
    loyalty.fail_next = 1

    with pytest.raises(Unavailable):
        await convert(wallet_store, points, wallet, 1_000, "k1")

    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 0
    assert loyalty.balances["member-3"] == 1_000
    assert (await convert(wallet_store, points, wallet, 1_000, "k1"))["balance_after"] == 1_000
    assert loyalty.balances["member-3"] == 0


async def test_a_lost_answer_is_completed_by_a_retry_without_redeeming_twice(
    wallet_store: Storage, loyalty: SandboxPointsProgram, points: PointsProgram
) -> None:
    wallet = await wallet_store.wallets.enroll("member-4")
    loyalty.grant("member-4", 5_000)
    loyalty.hang_next = 1  # the program redeems, then its answer never arrives

    with pytest.raises(Unavailable):
        await convert(wallet_store, points, wallet, 2_000, "k1")
    # The points are gone but nothing is credited yet: the top-up waits for its retry.
    assert loyalty.balances["member-4"] == 3_000
    assert (await wallet_store.wallets.wallet_by_id(wallet.id)).balance == 0

    first = await convert(wallet_store, points, wallet, 2_000, "k1")
    again = await convert(wallet_store, points, wallet, 2_000, "k1")

    assert first == again
    assert first["balance_after"] == 2_000
    assert loyalty.balances["member-4"] == 3_000
    assert len(loyalty.redemptions) == 1
    assert (await wallet_store.ledger.reconcile()).balanced
