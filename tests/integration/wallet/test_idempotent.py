"""The one idempotency skeleton every money movement runs under, on real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.errors import AlreadyExists
from services.wallet.storage import Storage
from services.wallet.storage.idempotent import idempotent, replay


async def test_the_first_request_with_a_key_does_the_work_and_a_retry_gets_its_result(
    wallet_store: Storage,
) -> None:
    pool = wallet_store.pool
    async with idempotent(pool, "test", "k1", "hash-a") as claim:
        assert claim.replayed is None and not claim.in_progress
        await claim.finish({"movement_id": "m1"})

    async with idempotent(pool, "test", "k1", "hash-a") as again:
        assert again.replayed == {"movement_id": "m1"}
    assert await replay(pool, "test", "k1", "hash-a") == {"movement_id": "m1"}


async def test_a_key_used_for_another_request_is_refused(wallet_store: Storage) -> None:
    pool = wallet_store.pool
    async with idempotent(pool, "test", "k1", "hash-a") as claim:
        await claim.finish({"movement_id": "m1"})

    with pytest.raises(AlreadyExists) as reused:
        async with idempotent(pool, "test", "k1", "hash-b"):
            pass
    with pytest.raises(AlreadyExists):
        await replay(pool, "test", "k1", "hash-b")
    assert reused.value.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_a_refused_request_leaves_its_key_free_for_the_next(wallet_store: Storage) -> None:
    pool = wallet_store.pool
    with pytest.raises(RuntimeError):
        async with idempotent(pool, "test", "k1", "hash-a"):
            raise RuntimeError("a rule refused the movement")

    async with idempotent(pool, "test", "k1", "hash-b") as claim:
        assert claim.replayed is None and not claim.in_progress


async def test_a_key_claimed_but_not_finished_reads_as_in_progress(wallet_store: Storage) -> None:
    pool = wallet_store.pool
    async with idempotent(pool, "test", "k1", "hash-a") as claim:
        assert claim.replayed is None

    async with idempotent(pool, "test", "k1", "hash-a") as again:
        assert again.in_progress and again.replayed is None
    assert await replay(pool, "test", "k1", "hash-a") is None


async def test_a_retry_racing_the_first_request_waits_for_it_and_replays_its_result(
    wallet_store: Storage,
) -> None:
    pool = wallet_store.pool
    claimed = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with idempotent(pool, "test", "k1", "hash-a") as claim:
            claimed.set()
            await release.wait()
            await claim.finish({"movement_id": "m1"})

    async def retry() -> dict[str, object] | None:
        await claimed.wait()
        async with idempotent(pool, "test", "k1", "hash-a") as claim:
            return claim.replayed

    running = asyncio.gather(first(), retry())
    # Release the first request only once the retry is waiting on its key.
    async with asyncio.timeout(30):
        while not await pool.fetchval(  # noqa: ASYNC110 - polls PostgreSQL for the waiter
            "select count(*) from pg_stat_activity"
            " where wait_event_type = 'Lock' and datname = current_database()"
        ):
            await asyncio.sleep(0.02)
    release.set()
    _, replayed = await asyncio.wait_for(running, timeout=30)
    assert replayed == {"movement_id": "m1"}
