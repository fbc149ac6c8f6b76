"""A migrated notify database per test, and helpers shared by the storage tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest_asyncio

from services.notify.bootstrap import MIGRATIONS
from services.notify.domain.kinds import NoticeKind
from services.notify.domain.notices import AcceptedNotice, NewNotice, RateLimit
from services.notify.domain.routing import Recipient
from services.notify.storage.notices import NoticeStore
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate

LIMIT = RateLimit(limit=3, window_seconds=60)


@pytest_asyncio.fixture
async def pool(new_database) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(await new_database("notify"), max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, "notify", MIGRATIONS)
    try:
        yield pool
    finally:
        await close_pool(pool)


async def accept(
    pool: asyncpg.Pool,
    account_id: str,
    kind: NoticeKind = NoticeKind.PASSWORD_CHANGED,
    *,
    key: str | None = None,
    caller: str = "identity",
    params: dict[str, Any] | None = None,
) -> AcceptedNotice:
    return await NoticeStore(pool).accept(
        NewNotice(
            kind=kind,
            caller=caller,
            idempotency_key=key or str(uuid.uuid4()),
            recipient=Recipient(account_id=account_id),
            params=params or {"occurred_at": None},
        ),
        LIMIT,
    )
