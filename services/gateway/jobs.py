"""The gateway's background work besides its HTTP server (``services/runtime/http.py``)."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from services.gateway.storage import partners as partner_store
from services.runtime.server import Background

_log = structlog.get_logger("mamoru.gateway.jobs")
HOUSEKEEPING_SECONDS = 60.0


def housekeeping(pool: asyncpg.Pool) -> Background:
    """Forget used assertion IDs past their expiry, old rate windows and old keys."""

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await partner_store.forget_expired(pool)
            except Exception:
                _log.exception("gateway.housekeeping_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=HOUSEKEEPING_SECONDS)

    return run
