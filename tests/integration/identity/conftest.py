"""Identity's storage on a real PostgreSQL: a migrated database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from services.identity.bootstrap import MIGRATIONS
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate


@pytest_asyncio.fixture
async def pool(new_database) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a new, migrated identity database."""
    pool = await create_pool(await new_database("identity"), max_size=6)
    async with pool.acquire() as conn:
        await migrate(conn, "identity", MIGRATIONS)
    try:
        yield pool
    finally:
        await close_pool(pool)
