"""The console's background work besides its HTTP server: forgetting old sessions."""

from __future__ import annotations

import asyncpg
import structlog

from services.console.storage import sessions as session_store
from services.runtime.jobs import Background, every

_log = structlog.get_logger("mamoru.console.jobs")
HOUSEKEEPING_SECONDS = 300.0


def housekeeping(pool: asyncpg.Pool) -> Background:
    async def sweep() -> None:
        await session_store.forget_expired(pool)

    return every(HOUSEKEEPING_SECONDS, sweep, log=_log, event="console.housekeeping_failed")
