"""A fresh, migrated risk database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest_asyncio

from services.risk.bootstrap import MIGRATIONS
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate


@pytest_asyncio.fixture
async def pool(new_database: Callable[..., Awaitable[str]]) -> AsyncIterator[asyncpg.Pool]:
    url = await new_database("risk")
    opened = await create_pool(url, max_size=8)
    async with opened.acquire() as conn:
        await migrate(conn, "risk", MIGRATIONS)
    try:
        yield opened
    finally:
        await close_pool(opened)
