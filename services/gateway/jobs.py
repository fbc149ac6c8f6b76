"""The gateway's background work besides its HTTP server (``services/runtime/http.py``)."""

from __future__ import annotations

import asyncpg
import structlog

from services.gateway.storage import partners as partner_store
from services.runtime.jobs import Background, every

_log = structlog.get_logger("mamoru.gateway.jobs")
HOUSEKEEPING_SECONDS = 60.0


def housekeeping(pool: asyncpg.Pool) -> Background:
    """Forget used assertion IDs past their expiry, old rate windows and old keys."""
    return every(
        HOUSEKEEPING_SECONDS,
        lambda: partner_store.forget_expired(pool),
        log=_log,
        event="gateway.housekeeping_failed",
    )
