"""Identity's background jobs, on the runtime's periodic loop."""

from __future__ import annotations

import asyncpg
import structlog

from services.identity import storage
from services.runtime.jobs import Background, every

log = structlog.get_logger(__name__)

# Spent device proofs are dropped once too old to be accepted anyway.
SPENT_PROOF_SWEEP_SECONDS = 60.0


def forget_spent_proofs(pool: asyncpg.Pool) -> Background:
    return every(
        SPENT_PROOF_SWEEP_SECONDS,
        lambda: storage.purge_device_proofs(pool),
        log=log,
        event="device_proofs.purge_failed",
    )
