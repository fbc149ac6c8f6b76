"""notify's background jobs: delivering what was accepted, on the runtime's leased
queue, and following identity's contact changes (``clients/contacts.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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
    attempted together; ``wake`` it when a notice is accepted, ``run`` it as the job."""
    return LeasedQueue(
        pool,
        deliveries.QUEUE,
        retry,
        attempt_batch=attempts.attempt_batch,
        failed=attempts.failed,
        describe=describe,
        batch_size=batch_size,
        poll_seconds=poll_seconds,
        event="notify.worker_error",
    )


class Lingering:
    """Calls ``wake`` (the queue's) ``seconds`` after the first of a run of accepted
    notices, so the notices accepted meanwhile are claimed, sent and recorded together."""

    def __init__(self, wake: Callable[[], None], seconds: float) -> None:
        self._wake_queue = wake
        self._seconds = seconds
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        if self._seconds <= 0:
            self._wake_queue()
            return
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._seconds, self._wake)

    def _wake(self) -> None:
        self._timer = None
        self._wake_queue()
