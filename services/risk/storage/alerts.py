"""Aggregate alerts: the platform-wide aggregates the rules watch, and raised alerts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.risk.domain.alerts import Alert, FailureReading
from services.risk.domain.containment import (
    ContainmentRule,
    NetworkFailures,
    contain,
    end_of_containment,
    summary,
)
from services.risk.domain.policy import Policy, PolicyChange
from services.risk.domain.windows import window_start
from services.risk.storage import policies

_COLUMNS = "alert_id, rule_id, status, raised_at, evidence, auto_action_taken"


def _alert(row: asyncpg.Record) -> Alert:
    return Alert(**dict(row))


_ALERT_LOCK = int.from_bytes(b"riskalrt", "big") - 2**63


async def alert_aggregates(
    pool: asyncpg.Pool,
    *,
    now: datetime,
    windows: dict[str, float],
    home_countries: Sequence[str],
) -> dict[str, float]:
    def since(rule_id: str) -> datetime:
        return now - timedelta(seconds=windows[rule_id])

    row = await pool.fetchrow(
        """
        select
            (select coalesce(sum(failures), 0) from counters
              where dimension = 'global' and key = '' and bucket >= $1) as failed_sign_ins,
            (select count(*) from decisions
              where kind = 'login' and decided_at >= $2 and country_code <> ''
                and not country_code = any($3::text[])) as foreign_sign_in_attempts,
            (select coalesce(sum(amount_minor), 0) from outcomes
              where outcome = 'top_up_completed' and occurred_at >= $4) as top_up_amount_minor,
            (select count(*) from decisions
              where kind = 'payment' and decided_at >= $5
                and inputs -> 'basket' ?| array['tobacco', 'gift_card', 'prepaid_card'])
              as high_risk_payments
        """,
        window_start(now, windows["alert.stuffing_wave"]),
        since("alert.foreign_ip_surge"),
        list(home_countries),
        since("alert.top_up_spike"),
        since("alert.high_risk_spend_spike"),
    )
    return {key: float(value) for key, value in dict(row).items()}


@dataclass(frozen=True)
class Containment:
    """How to contain a wave now: the rule, and the first bucket of the wave window."""

    rule: ContainmentRule
    since_bucket: int
    now: datetime


async def failure_reading(
    pool: asyncpg.Pool, *, now: datetime, first_bucket: int
) -> FailureReading:
    """Failed sign-ins across all IPs per bucket from ``first_bucket`` on (a few rows)."""
    rows = await pool.fetch(
        "select bucket, sum(failures)::bigint as failures from counters"
        " where dimension = 'global' and key = '' and bucket >= $1 group by bucket",
        first_bucket,
    )
    return FailureReading(now, {int(r["bucket"]): int(r["failures"]) for r in rows})


async def wave_sources(
    conn: asyncpg.Connection | asyncpg.Pool, *, since_bucket: int, min_failures: int, limit: int
) -> tuple[list[NetworkFailures], int]:
    """The /24s and /48s with at least ``min_failures`` failed sign-ins since
    ``since_bucket``, most first, at most ``limit``; and how many qualified in all."""
    rows = await conn.fetch(
        """
        select key, sum(failures)::bigint as failures, count(*) over () as qualifying
        from counters
        where dimension = 'subnet' and bucket >= $1
        group by key having sum(failures) >= $2
        order by failures desc, key limit $3
        """,
        since_bucket,
        min_failures,
        max(limit, 1),
    )
    qualifying = int(rows[0]["qualifying"]) if rows else 0
    return [NetworkFailures(r["key"], int(r["failures"])) for r in rows], qualifying


async def _contain_in(
    conn: asyncpg.Connection, alert_id: uuid.UUID, plan: Containment, rule_id: str
) -> tuple[Policy, dict[str, object]] | None:
    """Contain the wave's networks for ``alert_id`` inside the caller's transaction."""
    current = await policies.locked_policy(conn)
    if plan.rule.max_networks == 0 or current.lifted_containment_alert_id == str(alert_id):
        return None
    sources, qualifying = await wave_sources(
        conn,
        since_bucket=plan.since_bucket,
        min_failures=plan.rule.min_failures,
        limit=plan.rule.max_networks,
    )
    change = contain(current, str(alert_id), sources, plan.now, plan.rule)
    if change is None:
        return None
    added = len(set(change.networks) - current.contained_networks)
    reason = (
        f"{rule_id} {alert_id}: {added} networks added, "
        f"{len(change.networks)} contained until {change.until:%H:%M:%S} UTC"
    )
    policy = await policies.change_policy_in(conn, change, actor=AUTO_ACTOR, reason=reason)
    return policy, summary(change, qualifying)


AUTO_ACTOR = "risk:auto"


async def raise_alert(
    pool: asyncpg.Pool,
    *,
    rule_id: str,
    evidence: dict[str, Any],
    quiet_since: datetime,
    auto_action: PolicyChange | None,
    notice: Callable[[asyncpg.Connection, uuid.UUID, str], Awaitable[None]],
    containment: Containment | None = None,
    raised_at: datetime | None = None,
) -> tuple[uuid.UUID, Policy | None] | None:
    """Store the alert, its notice to operators, its automatic switch and its
    containment in one transaction.

    ``notice(conn, alert_id, auto_action_taken)`` enqueues the notice in that transaction.

    Nothing is raised while an alert of the same rule raised since ``quiet_since``
    is still open or acknowledged, and only one replica evaluates at a time.
    ``raised_at`` is the evaluation's clock (the database's when None), the clock
    ``quiet_since`` was taken from.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("select pg_try_advisory_xact_lock($1)", _ALERT_LOCK):
            return None
        if await open_alert(conn, rule_id, quiet_since) is not None:
            return None
        alert_id = uuid.uuid4()
        policy = None
        taken: dict[str, object] = {}
        if auto_action is not None:
            policy = await policies.change_policy_in(
                conn, auto_action, actor=AUTO_ACTOR, reason=f"alert {rule_id} {alert_id}"
            )
            taken.update(auto_action.describe())
        if containment is not None:
            contained = await _contain_in(conn, alert_id, containment, rule_id)
            if contained is not None:
                policy, taken["containment"] = contained
        action = json.dumps(taken, sort_keys=True) if taken else ""
        await conn.execute(
            "insert into alerts (alert_id, rule_id, evidence, auto_action_taken, raised_at)"
            " values ($1, $2, $3, $4, coalesce($5, now()))",
            alert_id,
            rule_id,
            evidence,
            action,
            raised_at,
        )
        await notice(conn, alert_id, action)
    return alert_id, policy


async def open_alert(
    conn: asyncpg.Connection | asyncpg.Pool, rule_id: str, quiet_since: datetime
) -> uuid.UUID | None:
    """The newest open or acknowledged alert of ``rule_id`` raised since ``quiet_since``."""
    found: uuid.UUID | None = await conn.fetchval(
        "select alert_id from alerts where rule_id = $1 and raised_at >= $2"
        " and status in ('open', 'acknowledged') order by raised_at desc limit 1",
        rule_id,
        quiet_since,
    )
    return found


async def contain_wave(
    pool: asyncpg.Pool, *, rule_id: str, quiet_since: datetime, containment: Containment
) -> Policy | None:
    """Grow or renew the containment of the open alert of ``rule_id`` (the wave goes
    on); returns the new policy, or None when nothing changed."""
    async with pool.acquire() as conn, conn.transaction():
        alert_id = await open_alert(conn, rule_id, quiet_since)
        if alert_id is None:
            return None
        contained = await _contain_in(conn, alert_id, containment, rule_id)
        if contained is None:
            return None
        policy, shown = contained
        await policies.note_containment(conn, alert_id, shown)
    return policy


async def end_containment(pool: asyncpg.Pool, *, now: datetime) -> Policy | None:
    """End a containment whose time has passed; None when there is none to end."""
    async with pool.acquire() as conn, conn.transaction():
        current = await policies.locked_policy(conn)
        change = end_of_containment(current, now)
        if change is None:
            return None
        reason = (
            f"containment for alert {current.containment_alert_id} ended: "
            f"no renewal since {current.containment_until:%H:%M:%S} UTC"
        )
        policy = await policies.change_policy_in(conn, change, actor=AUTO_ACTOR, reason=reason)
        if current.containment_alert_id:
            await policies.note_containment(
                conn, uuid.UUID(current.containment_alert_id), {"ended_at": now.isoformat()}
            )
    return policy


async def list_alerts(
    pool: asyncpg.Pool, *, status: str, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[Alert]:
    """Newest first; ``after`` is the (raised_at, alert_id) of the previous page's last."""
    rows = await pool.fetch(
        f"""
        select {_COLUMNS} from alerts
        where ($1 = '' or status = $1)
          and ($3::timestamptz is null or raised_at < $3
               or (raised_at = $3 and alert_id > $4::uuid))
        order by raised_at desc, alert_id limit $2
        """,  # noqa: S608 - the column list is a constant
        status,
        limit,
        after[0] if after else None,
        after[1] if after else None,
    )
    return [_alert(row) for row in rows]


async def update_alert(
    pool: asyncpg.Pool, alert_id: uuid.UUID, *, status: str, note: str | None
) -> Alert | None:
    row = await pool.fetchrow(
        f"""
        update alerts set status = $2, updated_at = now(),
            notes = case when $3::text is null then notes else notes || to_jsonb($3::text) end
        where alert_id = $1 returning {_COLUMNS}
        """,  # noqa: S608 - the column list is a constant
        alert_id,
        status,
        note,
    )
    return None if row is None else _alert(row)
