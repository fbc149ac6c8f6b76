"""The database layer through a real PgBouncer in transaction mode, as production's
pooler runs: every transaction may land on another server session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from services.devstack.pgbouncer import LocalPgBouncer
from services.runtime.config import ServiceSettings, load_settings
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate
from services.runtime.outbox import OutboxMessage, OutboxRelay, enqueue

# Fewer server sessions than clients, so transactions really move between sessions.
SERVER_SESSIONS = 2


@pytest_asyncio.fixture
async def bouncer(pg_server_url: str, tmp_path: Path) -> AsyncIterator[LocalPgBouncer]:
    running = LocalPgBouncer(pg_server_url, tmp_path / "pgbouncer", pool_size=SERVER_SESSIONS)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def busy(pool: asyncpg.Pool) -> None:
    async def one(n: int) -> None:
        async with pool.acquire() as conn:
            assert await conn.fetchval("select $1::int + 1", n) == n + 1
            async with conn.transaction():
                assert await conn.fetchval("select $1::jsonb", {"n": n}) == {"n": n}

    await asyncio.gather(*(one(n) for n in range(300)))


async def listening(direct: str) -> None:
    """Until the relay's own session (LISTEN, then idle between passes) is open."""
    conn = await asyncpg.connect(direct)
    try:
        async with asyncio.timeout(60):
            while True:
                if await conn.fetchval(
                    "select exists (select 1 from pg_stat_activity"
                    " where datname = current_database()"
                    " and application_name = 'mamoru-listen' and state = 'idle')"
                ):
                    return
                await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def test_named_statements_break_through_pgbouncer_which_is_why_pooled_pools_prepare_none(
    bouncer: LocalPgBouncer, new_database: Callable[..., Awaitable[str]]
) -> None:
    direct = await new_database("pooled")
    naive = await create_pool(bouncer.url(direct), max_size=10)
    try:
        with pytest.raises(asyncpg.InvalidSQLStatementNameError):
            await busy(naive)
    finally:
        naive.terminate()
    pooled = await create_pool(bouncer.url(direct), max_size=10, direct_url=direct)
    try:
        await busy(pooled)
    finally:
        await close_pool(pooled)


async def test_migrations_and_outbox_wake_ups_go_direct_while_traffic_goes_through_pgbouncer(
    bouncer: LocalPgBouncer, new_database: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    direct = await new_database("pooled")
    settings = load_settings(
        ServiceSettings,
        {"DATABASE_URL": bouncer.url(direct), "DATABASE_DIRECT_URL": direct},
    )
    assert settings.behind_transaction_pooler()
    pool = await create_pool(
        settings.database_url.reveal(), max_size=5, direct_url=settings.direct_database_url()
    )
    delivered: asyncio.Queue[OutboxMessage] = asyncio.Queue()

    async def deliver(message: OutboxMessage) -> None:
        await delivered.put(message)

    # Polling only every minute: a delivery within seconds was woken by NOTIFY, which
    # only a LISTEN on a session of its own (not a pooled one) receives.
    relay = OutboxRelay(pool, deliver, poll_interval_seconds=60.0)
    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        conn = await asyncpg.connect(settings.direct_database_url())
        try:
            await migrate(conn, "pooled", tmp_path)
        finally:
            await conn.close()
        running = asyncio.create_task(relay.run(stop))
        await listening(direct)
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, topic="test", idempotency_key="wake-1", payload={"n": 1})
        message = await asyncio.wait_for(delivered.get(), timeout=10)
        assert message.idempotency_key == "wake-1"
    finally:
        stop.set()
        if running is not None:
            await asyncio.wait_for(running, timeout=10)
        await close_pool(pool)
