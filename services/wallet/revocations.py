"""What a revoked session made in the wallet dies with it: payment and cash top-up
codes, the holds made with them, and the payout account it registered.

Identity's revocation stream reaches every replica. Each replica refuses the
session's codes and holds at once from memory (``WalletStore.session_revoked``)
and voids them in the database in the background, recording the session in
``revoked_sessions`` in the same transaction, so the replicas that have not heard
yet, and the wallet after a restart, find them dead too. Voiding is idempotent:
every replica does it, and a restarted wallet hears again of every revocation
identity still replays (an hour by default, longer than any hold or code lives),
so a revocation that arrived while the database was away is voided when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from services.wallet.storage import WalletStore

log = structlog.get_logger(__name__)

# Sessions voided in one transaction: a forced reset revokes them by the thousand.
BATCH = 500
RETRY_SECONDS = 1.0


class SessionVoider:
    """Collects revoked sessions and voids their codes and holds, batch by batch."""

    def __init__(self, store: WalletStore) -> None:
        self._store = store
        self._pending: dict[str, None] = {}
        self._arrived = asyncio.Event()

    def revoked(self, session_id: str) -> None:
        """Queue ``session_id`` (never blocks: called from the revocation stream)."""
        self._pending[session_id] = None
        self._arrived.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Background job: void queued sessions until ``stop``; retry what failed."""
        while not stop.is_set():
            if not self._pending:
                self._arrived.clear()
                waiting = asyncio.ensure_future(self._arrived.wait())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                stopping.cancel()
                continue
            batch = list(self._pending)[:BATCH]
            try:
                codes, holds, payouts = await self._store.void_sessions(batch)
            except Exception:
                # The database is away: memory keeps refusing, and the batch is retried.
                log.exception("revoked_sessions.void_failed", sessions=len(batch))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RETRY_SECONDS)
                continue
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
