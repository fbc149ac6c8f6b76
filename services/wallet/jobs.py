"""The wallet's background jobs: voiding what revoked sessions made.

What a revoked session made in the wallet dies with it: payment and cash top-up
codes, the holds made with them, and the payout account it registered.
Identity's revocation stream reaches every replica. Each replica refuses the
session's codes and holds at once from memory (``session_revoked`` in storage)
and voids them in the database here, recording the session in
``revoked_sessions`` in the same transaction, so the replicas that have not heard
yet, and the wallet after a restart, find them dead too. Voiding is idempotent:
every replica does it, and a restarted wallet hears again of every revocation
identity still replays (an hour by default, longer than any hold or code lives),
so a revocation that arrived while the database was away is voided when it returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import structlog

from services.runtime.jobs import Background, every

log = structlog.get_logger(__name__)

# Sessions voided in one transaction: a forced reset revokes them by the thousand.
BATCH = 500
# While the database is away, memory keeps refusing and the batch is retried this often.
RETRY_SECONDS = 1.0


class SessionVoiding(Protocol):
    async def void_sessions(self, session_ids: Sequence[str]) -> tuple[int, int, int]: ...


class SessionVoider:
    """Collects revoked sessions and voids their codes and holds, batch by batch."""

    def __init__(self, store: SessionVoiding) -> None:
        self._store = store
        self._pending: dict[str, None] = {}
        self._arrived = asyncio.Event()

    def revoked(self, session_id: str) -> None:
        """Queue ``session_id`` (never blocks: called from the revocation stream)."""
        self._pending[session_id] = None
        self._arrived.set()

    async def void_pending(self) -> None:
        while self._pending:
            batch = list(self._pending)[:BATCH]
            codes, holds, payouts = await self._store.void_sessions(batch)
            for session_id in batch:
                self._pending.pop(session_id, None)
            if codes or holds or payouts:
                log.info(
                    "revoked_sessions.voided",
                    codes=codes,
                    holds=holds,
                    payout_accounts=payouts,
                    sessions=len(batch),
                )

    def job(self) -> Background:
        """Voids as sessions arrive; after a failure, again every ``RETRY_SECONDS``."""
        return every(
            RETRY_SECONDS,
            self.void_pending,
            log=log,
            event="revoked_sessions.void_failed",
            wake=self._arrived,
        )
