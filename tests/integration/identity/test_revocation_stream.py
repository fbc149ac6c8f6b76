"""WatchRevocations' stream against real PostgreSQL: revocations committed out of order.

A revocation's sequence number is taken when its row is inserted but the row is
seen only when its transaction commits, so a long transaction (a forced reset
batch) can commit lower numbers after a later logout has been streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta

import asyncpg

from services.identity.clients.revocations import RevocationFeed
from services.identity.storage import sessions as session_store

WITHIN = 10.0


async def account_with_sessions(pool: asyncpg.Pool, sessions: int) -> tuple[uuid.UUID, set[str]]:
    account_id = uuid.uuid4()
    await pool.execute(
        "insert into accounts (id, status, payer_id) values ($1, 'active', $2)",
        account_id,
        uuid.uuid4(),
    )
    ids = {str(uuid.uuid4()) for _ in range(sessions)}
    await pool.executemany(
        "insert into sessions (id, account_id, device_id, methods, assurance_level, auth_time,"
        " expires_at) values ($1::uuid, $2, 'd', '{password}', 1, now(), now() + interval '1 day')",
        [(session_id, account_id) for session_id in ids],
    )
    return account_id, ids


async def revoke_all(conn: asyncpg.Connection, account_id: uuid.UUID) -> None:
    await session_store.revoke_sessions(
        conn, account_id=account_id, reason="test", token_lifetime=timedelta(minutes=11)
    )


class Follower:
    """One WatchRevocations stream, as another service consumes it."""

    def __init__(self, feed: RevocationFeed, after: int, stop: asyncio.Event) -> None:
        self.seen: list[tuple[int, str]] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._follow(feed, after, stop))

    async def _follow(self, feed: RevocationFeed, after: int, stop: asyncio.Event) -> None:
        async for sequence, session_id, _ in feed.stream(after, stop):
            async with self._changed:
                self.seen.append((sequence, session_id))
                self._changed.notify_all()

    async def has_seen(self, sessions: set[str]) -> None:
        async with asyncio.timeout(WITHIN), self._changed:
            await self._changed.wait_for(lambda: sessions <= {s for _, s in self.seen})

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_a_revocation_committed_after_a_later_one_still_reaches_every_follower(pool):
    stop = asyncio.Event()
    feed = RevocationFeed(pool)
    listening = asyncio.create_task(feed.listen(stop))
    batch_account, batch_sessions = await account_with_sessions(pool, 3)
    logout_account, logout_sessions = await account_with_sessions(pool, 1)
    follower = Follower(feed, 0, stop)
    try:
        async with pool.acquire() as batch:
            # The forced reset batch takes the lower sequence numbers and keeps running...
            transaction = batch.transaction()
            await transaction.start()
            await revoke_all(batch, batch_account)
            # ...while a logout takes a higher one and commits first.
            async with pool.acquire() as logout, logout.transaction():
                await revoke_all(logout, logout_account)
            await follower.has_seen(logout_sessions)
            last_seen = max(sequence for sequence, _ in follower.seen)
            await transaction.commit()

        await follower.has_seen(batch_sessions)
        # A follower that reconnects from the cursor it reached gets them too.
        late = Follower(feed, last_seen, stop)
        try:
            await late.has_seen(batch_sessions)
        finally:
            await late.close()
        # Each stream sends a revocation once.
        sequences = [sequence for sequence, _ in follower.seen]
        assert len(sequences) == len(set(sequences)) == 4
    finally:
        stop.set()
        await follower.close()
        await listening
