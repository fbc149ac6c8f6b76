"""SQL of the console's action log and of the forced resets it started."""

from __future__ import annotations

import asyncpg

from services.console.domain.records import Action, ResetJob


async def record(
    pool: asyncpg.Pool, *, operator: str, action: str, target: str, reason: str, outcome: str
) -> None:
    await pool.execute(
        "insert into console_actions (operator, action, target, reason, outcome)"
        " values ($1, $2, $3, $4, $5)",
        operator,
        action,
        target,
        reason,
        outcome,
    )


async def recent(pool: asyncpg.Pool, *, prefix: str = "", limit: int = 50) -> list[Action]:
    rows = await pool.fetch(
        "select operator, action, target, reason, outcome, acted_at from console_actions"
        " where action like $1 order by action_id desc limit $2",
        f"{prefix}%",
        limit,
    )
    return [Action(**dict(row)) for row in rows]


async def start_reset(pool: asyncpg.Pool, job: ResetJob) -> None:
    await pool.execute(
        "insert into console_resets (job_id, operator, reason, scope, processed, total, done,"
        " failure, started_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        " on conflict (job_id) do nothing",
        job.job_id,
        job.operator,
        job.reason,
        job.scope,
        job.processed,
        job.total,
        job.done,
        job.failure,
        job.started_at,
        job.updated_at,
    )


async def update_reset(
    pool: asyncpg.Pool, job_id: str, *, processed: int, total: int, done: bool, failure: str = ""
) -> None:
    await pool.execute(
        "update console_resets set processed = $2, total = $3, done = $4, failure = $5,"
        " updated_at = now() where job_id = $1",
        job_id,
        processed,
        total,
        done,
        failure,
    )


async def fail_reset(pool: asyncpg.Pool, job_id: str, failure: str) -> None:
    """Marks a reset whose progress stopped arriving; its counts stay as last heard."""
    await pool.execute(
        "update console_resets set failure = $2, updated_at = now() where job_id = $1 and not done",
        job_id,
        failure,
    )


async def resets(pool: asyncpg.Pool, limit: int = 20) -> list[ResetJob]:
    rows = await pool.fetch(
        "select job_id, operator, reason, scope, processed, total, done, failure, started_at,"
        " updated_at from console_resets order by started_at desc limit $1",
        limit,
    )
    return [ResetJob(**dict(row)) for row in rows]
