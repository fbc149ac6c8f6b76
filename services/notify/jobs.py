"""notify's background job: delivering what was accepted, on the runtime's leased queue."""

from __future__ import annotations

import asyncpg

from services.notify.domain.notices import ClaimedDelivery
from services.notify.storage import deliveries
from services.notify.use_cases.deliveries import DeliveryAttempts, describe
from services.runtime.queue import LeasedQueue, RetryPolicy


def delivery_queue(
    pool: asyncpg.Pool,
    attempts: DeliveryAttempts,
    retry: RetryPolicy,
    *,
    poll_seconds: float = 1.0,
    batch_size: int = 50,
) -> LeasedQueue[ClaimedDelivery]:
    """Due deliveries, claimed a batch at a time (several replicas share them) and
    attempted each once; ``wake`` it when a notice is accepted, ``run`` it as the job."""
    return LeasedQueue(
        pool,
        deliveries.QUEUE,
        retry,
        attempt=attempts.attempt,
        failed=attempts.failed,
        describe=describe,
        batch_size=batch_size,
        poll_seconds=poll_seconds,
        event="notify.worker_error",
    )
