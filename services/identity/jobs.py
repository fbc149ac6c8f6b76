"""Identity's background jobs, on the runtime's periodic loop."""

from __future__ import annotations

import asyncpg
import structlog

from services.identity.storage import device_proofs as proof_store
from services.identity.use_cases.keys import KeyRing
from services.runtime.jobs import Background, every

log = structlog.get_logger(__name__)

# Spent device proofs are dropped once too old to be accepted anyway.
SPENT_PROOF_SWEEP_SECONDS = 60.0
# Each replica reloads the key ring this often, so all agree within a minute.
KEY_RELOAD_SECONDS = 60.0


def forget_spent_proofs(pool: asyncpg.Pool) -> Background:
    return every(
        SPENT_PROOF_SWEEP_SECONDS,
        lambda: proof_store.purge_device_proofs(pool),
        log=log,
        event="device_proofs.purge_failed",
    )


def follow_signing_keys(keys: KeyRing) -> Background:
    """Rotate the signing keys when due and pick up rotations made by other replicas."""
    return every(
        KEY_RELOAD_SECONDS, keys.reload, log=log, event="signing_keys.reload_failed", first=False
    )
