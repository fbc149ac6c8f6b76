"""What a connection carries when the pool lends it again: nothing a borrower left.

The pool skips asyncpg's reset query on an ordinary release (a round trip per
acquisition), so these pin down why that is safe: transactions left open are
rolled back, and session-long state only comes from ``session_connection``,
which resets the session itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from services.runtime.db import close_pool, create_pool, session_connection


@pytest_asyncio.fixture
async def pool(new_database) -> AsyncIterator[asyncpg.Pool]:
    # One connection, so every acquisition gets the one the test used before.
    pool = await create_pool(await new_database("pool"), max_size=1)
    try:
        yield pool
    finally:
        await close_pool(pool)


async def _last_statement_of(admin: asyncpg.Connection, pid: int) -> str:
    query: str = await admin.fetchval("select query from pg_stat_activity where pid = $1", pid)
    return query


async def test_an_ordinary_release_sends_no_reset_statement(new_database):
    url = await new_database("pool")
    pool = await create_pool(url, max_size=1)
    admin = await asyncpg.connect(url)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("select pg_backend_pid() /* borrower */")
        # pg_stat_activity shows a session's latest statement: a reset on release
        # would have replaced the borrower's.
        assert "borrower" in await _last_statement_of(admin, pid)
    finally:
        await admin.close()
        await close_pool(pool)


async def test_a_transaction_left_open_is_rolled_back_before_the_connection_is_lent_again(
    pool: asyncpg.Pool,
):
    async with pool.acquire() as conn:
        await conn.execute("create table kept (n int)")
    async with pool.acquire() as conn:
        first_pid = await conn.fetchval("select pg_backend_pid()")
        await conn.execute("begin")
        await conn.execute("insert into kept values (1)")
        await conn.execute("set local statement_timeout = 1234")
        await conn.execute("select pg_advisory_xact_lock(7)")
    async with pool.acquire() as conn:
        assert await conn.fetchval("select pg_backend_pid()") == first_pid
        assert not conn.is_in_transaction()
        assert await conn.fetchval("select count(*) from kept") == 0
        assert await conn.fetchval("show statement_timeout") == "0"
        assert await conn.fetchval("select count(*) from pg_locks where locktype = 'advisory'") == 0


# asyncpg warns that the listener is still registered at release: on purpose here.
@pytest.mark.filterwarnings("ignore:.*active notification listener")
async def test_a_session_connection_comes_back_without_listen_locks_or_settings(
    pool: asyncpg.Pool,
):
    async with session_connection(pool) as conn:
        session_pid = await conn.fetchval("select pg_backend_pid()")
        await conn.add_listener("revocations", lambda *_: None)
        await conn.execute("set statement_timeout = 4321")
        await conn.execute("select pg_advisory_lock(42)")
        assert await conn.fetchval("select count(*) from pg_listening_channels()") == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("select pg_backend_pid()") == session_pid
        assert await conn.fetchval("select count(*) from pg_listening_channels()") == 0
        assert await conn.fetchval("show statement_timeout") == "0"
        assert await conn.fetchval("select count(*) from pg_locks where locktype = 'advisory'") == 0


async def test_a_session_that_ended_in_an_error_is_still_reset(pool: asyncpg.Pool):
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with session_connection(pool) as conn:
            await conn.execute("select pg_advisory_lock(43)")
            await conn.execute("begin")
            await conn.execute("select 1 / 0")
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("select count(*) from pg_locks where locktype = 'advisory'") == 0


async def test_a_session_connection_cancelled_mid_reset_is_not_lent_out_dirty(
    pool: asyncpg.Pool,
):
    holder_started = asyncio.Event()

    async def hold() -> None:
        async with session_connection(pool) as conn:
            await conn.execute("set statement_timeout = 999")
            holder_started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await asyncio.wait_for(holder_started.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with pool.acquire() as conn:
        assert await conn.fetchval("show statement_timeout") == "0"
