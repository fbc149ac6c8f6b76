"""The stream of revoked sessions: WatchRevocations for other services, and identity's own list.

One LISTEN connection per process wakes every open stream when a revocation
commits; a short poll covers a lost notification, so a revoked token dies
everywhere within seconds either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import structlog

from services.identity import storage
from services.runtime.tokens import RevocationList

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0


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

        while not stop.is_set():
            try:
                async with self._pool.acquire() as conn:
                    await conn.add_listener(storage.REVOCATIONS_CHANNEL, on_notify)
                    try:
                        await stop.wait()
                    finally:
                        if not conn.is_closed():
                            await conn.remove_listener(storage.REVOCATIONS_CHANNEL, on_notify)
            except Exception:
                log.exception("revocations.listen_failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=POLL_SECONDS)

    async def _wait_for_change(self, generation: int, stop: asyncio.Event) -> None:
        async with self._changed:
            if self._generation != generation or stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=POLL_SECONDS)

    async def stream(
        self, after: int, stop: asyncio.Event
    ) -> AsyncIterator[tuple[int, str, object]]:
        """(sequence, session_id, expires_at) from ``after`` on, live, until ``stop``."""
        while not stop.is_set():
            generation = self._generation
            rows = await storage.revocations_after(self._pool, after)
            for row in rows:
                after = row["sequence"]
                yield row["sequence"], str(row["session_id"]), row["expires_at"]
            if not rows:
                await self._wait_for_change(generation, stop)

    async def follow_into(self, revocations: RevocationList, stop: asyncio.Event) -> None:
        """Background job: keep identity's own token verifier's revocation list current."""
        while not stop.is_set():
            try:
                async for _, session_id, expires_at in self.stream(0, stop):
                    revocations.revoke(session_id, expires_at)  # type: ignore[arg-type]
            except Exception:
                log.exception("revocations.follow_failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=POLL_SECONDS)
