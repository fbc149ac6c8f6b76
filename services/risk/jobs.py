"""Risk's background jobs, on the runtime's periodic loop: the decision writer,
the policy refresh, the alert evaluation, the stuffing watch and the counter purge."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import asyncpg
import structlog

from services.risk.domain.decisions import StoredDecision
from services.risk.storage import counters
from services.risk.storage import decisions as decision_store
from services.risk.use_cases.alerts import Alerts
from services.risk.use_cases.policies import RiskState
from services.runtime.jobs import Background, every

log = structlog.get_logger(__name__)

PURGE_INTERVAL_SECONDS = 300.0
_BATCH = 1000


class DecisionWriter:
    """Stores decisions in batches off the request path (the DecisionLog port).

    An assessment returns as soon as its verdict is known; the writer job inserts
    the queued decisions every few milliseconds in one statement. Shutdown flushes
    what is queued. If the queue grows past ``max_queued`` (the database is
    stuck), callers wait for the writer instead of growing memory without bound.
    """

    def __init__(self, pool: asyncpg.Pool, *, max_queued: int = 20_000) -> None:
        self._pool = pool
        self._max_queued = max_queued
        self._queue: list[StoredDecision] = []
        self._lock = asyncio.Lock()

    async def add(self, decision: StoredDecision) -> None:
        self._queue.append(decision)
        if len(self._queue) >= self._max_queued:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            while self._queue:
                batch, self._queue = self._queue[:_BATCH], self._queue[_BATCH:]
                try:
                    await decision_store.insert_decisions(self._pool, batch)
                except Exception:
                    self._queue[:0] = batch
                    raise


def decision_writer(writer: DecisionWriter, *, interval_seconds: float) -> Background:
    flushing = every(
        interval_seconds, writer.flush, log=log, event="decisions.flush_failed", first=False
    )

    async def run(stop: asyncio.Event) -> None:
        await flushing(stop)
        # The closers flush again; this one covers a stop with the database back.
        with contextlib.suppress(Exception):
            await writer.flush()

    return run


def policy_refresh(state: RiskState, *, interval_seconds: float) -> Background:
    """Follow changes made through other replicas; keep enforcing the last known policy
    and rules while the database is away."""
    return every(interval_seconds, state.load, log=log, event="state.refresh_failed", first=False)


def alert_evaluation(alerts: Alerts, *, interval_seconds: float) -> Background:
    return every(
        interval_seconds, alerts.evaluate, log=log, event="alerts.evaluation_failed", first=False
    )


def stuffing_watch(alerts: Alerts, *, interval_seconds: float) -> Background:
    """The stuffing wave's alert and containment, every second or two."""
    return every(
        interval_seconds, alerts.watch_stuffing, log=log, event="alerts.stuffing_watch_failed",
        first=False,
    )  # fmt: skip


def counter_purge(pool: asyncpg.Pool) -> Background:
    async def purge() -> None:
        await counters.purge_old_counters(pool, datetime.now(UTC))

    return every(PURGE_INTERVAL_SECONDS, purge, log=log, event="counters.purge_failed")
