"""WatchContactChanges' feed against real PostgreSQL: what the triggers announce, and
streams that end when the feed could have missed an announcement."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from services.identity.clients.contact_changes import ContactChangeFeed

WITHIN = 10.0


async def account(pool: asyncpg.Pool) -> uuid.UUID:
    account_id = uuid.uuid4()
    await pool.execute(
        "insert into accounts (id, status, payer_id) values ($1, 'active', $2)",
        account_id,
        uuid.uuid4(),
    )
    return account_id


async def add_contact(
    pool: asyncpg.Pool | asyncpg.Connection, account_id: uuid.UUID, *, verified: bool
) -> uuid.UUID:
    contact_id = uuid.uuid4()
    address = f"{contact_id.hex[:8]}@example.jp"
    await pool.execute(
        "insert into contacts (id, account_id, kind, address, address_key, verified)"
        " values ($1, $2, 1, $3, $3, $4)",
        contact_id,
        account_id,
        address,
        verified,
    )
    return contact_id


class Stream:
    """One open WatchContactChanges stream, as notify follows it."""

    def __init__(self, feed: ContactChangeFeed, stop: asyncio.Event) -> None:
        self.heard: list[str] = []
        self.ended = asyncio.Event()
        self._changed = asyncio.Condition()
        self._subscribed = asyncio.Event()
        self._task = asyncio.create_task(self._follow(feed, stop))

    async def _follow(self, feed: ContactChangeFeed, stop: asyncio.Event) -> None:
        try:
            async with feed.subscribe(stop) as subscription:
                self._subscribed.set()
                async for account_ids in subscription.batches(stop):
                    async with self._changed:
                        self.heard.extend(account_ids)
                        self._changed.notify_all()
        finally:
            self.ended.set()

    async def subscribed(self) -> Stream:
        async with asyncio.timeout(WITHIN):
            await self._subscribed.wait()
        return self

    async def has_heard(self, account_id: uuid.UUID) -> None:
        async with asyncio.timeout(WITHIN), self._changed:
            await self._changed.wait_for(lambda: str(account_id) in self.heard)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest_asyncio.fixture
async def feed(pool: asyncpg.Pool) -> AsyncIterator[tuple[ContactChangeFeed, asyncio.Event]]:
    stop = asyncio.Event()
    running = ContactChangeFeed(pool, check_seconds=0.2)
    listening = asyncio.create_task(running.listen(stop))
    try:
        yield running, stop
    finally:
        stop.set()
        await listening


async def test_a_committed_contact_change_is_heard_and_a_rolled_back_one_is_not(
    pool: asyncpg.Pool, feed: tuple[ContactChangeFeed, asyncio.Event]
) -> None:
    changes, stop = feed
    stream = await Stream(changes, stop).subscribed()
    rolled_back, committed, pending_only = await account(pool), await account(pool), None
    try:
        async with pool.acquire() as conn:
            with contextlib.suppress(RuntimeError):
                async with conn.transaction():
                    await add_contact(conn, rolled_back, verified=True)
                    raise RuntimeError("roll back")
        pending_only = await account(pool)
        pending = await add_contact(pool, pending_only, verified=False)
        await pool.execute(
            "update contacts set code_attempts = code_attempts + 1 where id = $1", pending
        )
        contact = await add_contact(pool, committed, verified=False)
        await pool.execute("update contacts set verified = true where id = $1", contact)

        await stream.has_heard(committed)
        # The notifications of one session arrive in commit order: nothing earlier is late.
        assert stream.heard == [str(committed)]
    finally:
        await stream.close()


async def test_a_change_of_language_or_status_is_heard_and_a_sign_in_counter_is_not(
    pool: asyncpg.Pool, feed: tuple[ContactChangeFeed, asyncio.Event]
) -> None:
    changes, stop = feed
    stream = await Stream(changes, stop).subscribed()
    quiet, talked, closed = await account(pool), await account(pool), await account(pool)
    try:
        await pool.execute("update accounts set recent_failures = 3 where id = $1", quiet)
        await pool.execute("update accounts set language = 1 where id = $1", talked)
        await pool.execute("update accounts set status = 'closed' where id = $1", closed)

        await stream.has_heard(closed)
        assert stream.heard == [str(talked), str(closed)]
    finally:
        await stream.close()


async def test_every_stream_ends_when_the_listening_connection_is_lost(
    pool: asyncpg.Pool, feed: tuple[ContactChangeFeed, asyncio.Event]
) -> None:
    changes, stop = feed
    first = await Stream(changes, stop).subscribed()
    second = await Stream(changes, stop).subscribed()
    try:
        await pool.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where pid <> pg_backend_pid() and datname = current_database()"
            " and (query like 'LISTEN%' or query = 'select 1')"
        )
        async with asyncio.timeout(WITHIN):
            await first.ended.wait()
            await second.ended.wait()

        # The feed listens again; a new stream hears what follows.
        again = await Stream(changes, stop).subscribed()
        changed = await account(pool)
        await add_contact(pool, changed, verified=True)
        await again.has_heard(changed)
        await again.close()
    finally:
        await first.close()
        await second.close()
