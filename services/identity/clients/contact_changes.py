"""The stream of accounts whose registered contacts changed: WatchContactChanges.

One LISTEN connection per process hears the database's announcements (sent at
commit by the triggers of migration 0006) and hands each account id to every open
stream. Nothing is stored or replayed: a follower keeps answers only while its
stream is open, so every stream ends when this process could have missed an
announcement (its listening connection was lost, or the follower fell too far
behind) and the follower, reconnecting, forgets everything it kept.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import structlog

from services.identity.storage import contact_changes as store
from services.runtime.db import session_connection
from services.runtime.errors import Unavailable
from services.runtime.jobs import pause, wait_for_any
from services.runtime.outages import OutageLog

log = structlog.get_logger(__name__)

RETRY_SECONDS = 1.0
# How often the idle listening connection is asked for a round trip, so one that
# died without a word ends the streams within this time.
CHECK_SECONDS = 10.0
# Account ids one message carries at most.
BATCH = 500
# A follower this far behind has its stream ended rather than held in memory.
BACKLOG_LIMIT = 100_000


class Subscription:
    """One open stream: the account ids heard and not yet sent."""

    def __init__(self) -> None:
        self._pending: dict[str, None] = {}
        self._heard = asyncio.Event()
        self.ended = False

    def hear(self, account_id: str) -> None:
        if len(self._pending) >= BACKLOG_LIMIT:
            self.end()
            return
        self._pending[account_id] = None
        self._heard.set()

    def end(self) -> None:
        self.ended = True
        self._heard.set()

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[list[str]]:
        """Batches of changed account ids until ``stop`` or the feed ends this stream."""
        while not stop.is_set():
            await wait_for_any(stop, self._heard)
            self._heard.clear()
            if self.ended:
                return
            while self._pending:
                ids = list(self._pending)[:BATCH]
                for account_id in ids:
                    del self._pending[account_id]
                yield ids


class ContactChangeFeed:
    def __init__(self, pool: asyncpg.Pool, *, check_seconds: float = CHECK_SECONDS) -> None:
        self._pool = pool
        self._check_seconds = check_seconds
        self._subscriptions: set[Subscription] = set()
        self._listening = asyncio.Event()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        for subscription in self._subscriptions:
            subscription.hear(payload)

    def _end_all(self) -> None:
        self._listening.clear()
        for subscription in self._subscriptions:
            subscription.end()
        self._subscriptions.clear()

    async def listen(self, stop: asyncio.Event) -> None:
        """Background job: hear the database's announcements while streams are open."""
        outage = OutageLog(log, "contact_changes.listen_failed")
        while not stop.is_set():
            try:
                await self._listen_once(stop, outage)
            except Exception as error:
                outage.failed(error)
            finally:
                self._end_all()
            if not stop.is_set():
                await pause(stop, RETRY_SECONDS)

    async def _listen_once(self, stop: asyncio.Event, outage: OutageLog) -> None:
        lost = asyncio.Event()
        async with session_connection(self._pool) as conn:
            conn.add_termination_listener(lambda _: lost.set())
            await conn.add_listener(store.CONTACT_CHANGES_CHANNEL, self._on_notify)
            self._listening.set()
            outage.ok()
            try:
                while not await wait_for_any(stop, lost, seconds=self._check_seconds):
                    await store.still_connected(conn)
            finally:
                self._end_all()
                if not conn.is_closed():
                    await conn.remove_listener(store.CONTACT_CHANGES_CHANNEL, self._on_notify)
        if lost.is_set() and not stop.is_set():
            raise ConnectionError("the listening connection was lost")

    @contextlib.asynccontextmanager
    async def subscribe(self, stop: asyncio.Event) -> AsyncIterator[Subscription]:
        """A subscription that hears every change committed from now on; waits for the
        listening connection, so nothing announced after this returns is missed."""
        await wait_for_any(stop, self._listening)
        if not self._listening.is_set():
            raise Unavailable("CONTACT_CHANGES_UNAVAILABLE", "identity is shutting down")
        subscription = Subscription()
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
