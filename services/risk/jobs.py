"""Risk's background jobs, on the runtime's periodic loop: the counter sync, the
policy refresh, the alert evaluation, the stuffing watch and the counter purge;
and the group commit that stores decisions."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import structlog

from services.risk.domain.decisions import StoredDecision
from services.risk.storage import counters
from services.risk.storage import decisions as decision_store
from services.risk.use_cases.alerts import Alerts
from services.risk.use_cases.counting import Counting
from services.risk.use_cases.policies import RiskState
from services.runtime.batching import GroupCommit
from services.runtime.jobs import Background, every

log = structlog.get_logger(__name__)

PURGE_INTERVAL_SECONDS = 300.0


def decision_log(pool: asyncpg.Pool, *, max_wait: float) -> GroupCommit[StoredDecision]:
    """The DecisionLog port: concurrent decisions stored with one statement, each
    assessment answered once its batch is committed."""

    async def write(batch: Sequence[StoredDecision]) -> None:
        await decision_store.insert_decisions(pool, batch)

    return GroupCommit(write, max_wait=max_wait)


def counter_sync(counting: Counting, *, interval_seconds: float) -> Background:
    """Share this replica's counts and read the others'; a clean stop flushes once more,
    so only a replica that dies loses counts (at most one interval)."""
    syncing = every(
        interval_seconds, counting.sync, log=log, event="counters.sync_failed", first=False
    )

    async def run(stop: asyncio.Event) -> None:
        await syncing(stop)
        try:
            await counting.flush()
        except Exception as error:  # the database is away: nothing more to do
            log.warning("counters.final_flush_failed", error=str(error))

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
