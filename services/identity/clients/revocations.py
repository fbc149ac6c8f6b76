"""The stream of revoked sessions: WatchRevocations for other services, and identity's own list.

One LISTEN connection per process wakes every open stream when a revocation
commits; a short poll covers a lost notification, so a revoked token dies
everywhere within seconds either way.

A revocation's sequence number is taken at insert but its row appears at commit,
so numbers can appear out of order (a forced reset batch commits after a later
logout). Each stream therefore watches the numbers it has passed without seeing
them, and sends those rows when they appear; followers' revoke is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg
import structlog

from services.identity.storage import revocations as revocation_store
from services.runtime.db import session_connection
from services.runtime.jobs import pause
from services.runtime.outages import OutageLog
from services.runtime.tokens import RevocationList

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0
# How long a passed, unseen sequence number is watched: its transaction may still commit.
LATE_COMMIT_SECONDS = 60.0
# How far below a (re)connecting follower's cursor its stream looks again, and the most
# numbers one jump in the sequence leaves watched.
LOOK_BACK = 10_000


class RevocationFeed:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._changed = asyncio.Condition()
        self._generation = 0

    async def _wake(self) -> None:
        async with self._changed:
            self._generation += 1
            self._changed.notify_all()

    async def listen(self, stop: asyncio.Event) -> None:
        """Background job: turn PostgreSQL notifications into wake-ups."""
        loop = asyncio.get_running_loop()
        wakers: set[asyncio.Task[None]] = set()

        def on_notify(*_: object) -> None:
            task = loop.create_task(self._wake())
            wakers.add(task)
            task.add_done_callback(wakers.discard)

        outage = OutageLog(log, "revocations.listen_failed")
        while not stop.is_set():
            try:
                async with session_connection(self._pool) as conn:
                    await conn.add_listener(revocation_store.REVOCATIONS_CHANNEL, on_notify)
                    outage.ok()
                    try:
                        await stop.wait()
                    finally:
                        if not conn.is_closed():
                            await conn.remove_listener(
                                revocation_store.REVOCATIONS_CHANNEL, on_notify
                            )
            except Exception as error:
                outage.failed(error)
                await pause(stop, POLL_SECONDS)

    async def _wait_for_change(self, generation: int, stop: asyncio.Event) -> None:
        async with self._changed:
            if self._generation != generation or stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=POLL_SECONDS)

    async def stream(
        self, after: int, stop: asyncio.Event
    ) -> AsyncIterator[tuple[int, str, object]]:
        """(sequence, session_id, expires_at) from ``after`` on, live, until ``stop``;
        also the live ones below it that commit late, each sent once per stream."""
        # Sequence number -> when to stop watching it.
        unseen: dict[int, float] = {}
        # The follower may have passed numbers whose transactions had not committed.
        _watch(unseen, after - LOOK_BACK + 1, after + 1)
        while not stop.is_set():
            generation = self._generation
            late = []
            if unseen:
                late = await revocation_store.revocations_among(self._pool, sorted(unseen))
                for row in late:
                    del unseen[row["sequence"]]
                    if row["live"]:
                        yield row["sequence"], str(row["session_id"]), row["expires_at"]
                now = time.monotonic()
                for sequence in [s for s, until in unseen.items() if until < now]:
                    del unseen[sequence]
            rows = await revocation_store.revocations_after(self._pool, after)
            for row in rows:
                _watch(unseen, after + 1, row["sequence"])
                after = row["sequence"]
                yield row["sequence"], str(row["session_id"]), row["expires_at"]
            if not rows and not late:
                await self._wait_for_change(generation, stop)

    async def follow_into(self, revocations: RevocationList, stop: asyncio.Event) -> None:
        """Background job: keep identity's own token verifier's revocation list current."""
        outage = OutageLog(log, "revocations.follow_failed")
        while not stop.is_set():
            try:
                async for _, session_id, expires_at in self.stream(0, stop):
                    outage.ok()
                    revocations.revoke(session_id, expires_at)  # type: ignore[arg-type]
            except Exception as error:
                outage.failed(error)
                await pause(stop, POLL_SECONDS)


def _watch(unseen: dict[int, float], first: int, end: int) -> None:
    """Watch the sequence numbers ``first`` to ``end - 1`` (at most ``LOOK_BACK`` of them)."""
    until = time.monotonic() + LATE_COMMIT_SECONDS
    for sequence in range(max(first, end - LOOK_BACK, 1), end):
        unseen.setdefault(sequence, until)
