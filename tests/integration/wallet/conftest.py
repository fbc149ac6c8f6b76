"""A migrated wallet database per test, behind the real Storage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio

from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate
from services.wallet.bootstrap import MIGRATIONS
from services.wallet.domain.limits import Limits
from services.wallet.storage import Storage

GENEROUS = Limits(
    per_top_up=50_000,
    day_amount=100_000,
    day_count=1_000,
    month_amount=1_000_000,
    balance_cap=1_000_000,
    new_wallet_days=0,
    new_wallet_day_amount=100_000,
    new_source_per_top_up=10_000,
)


@pytest_asyncio.fixture
async def wallet_store(new_database: Callable[..., Awaitable[str]]) -> AsyncIterator[Storage]:
    url = await new_database("wallet")
    pool = await create_pool(url, max_size=12)
    async with pool.acquire() as conn:
        await migrate(conn, "wallet", MIGRATIONS)
    try:
        yield Storage(pool, GENEROUS)
    finally:
        await close_pool(pool)
