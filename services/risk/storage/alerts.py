"""Aggregate alerts: the platform-wide aggregates the rules watch, and raised alerts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.risk.domain.alerts import Alert
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


async def raise_alert(
    pool: asyncpg.Pool,
    *,
    rule_id: str,
    evidence: dict[str, Any],
    quiet_since: datetime,
    auto_action: PolicyChange | None,
    notice: Callable[[asyncpg.Connection, uuid.UUID, str], Awaitable[None]],
) -> tuple[uuid.UUID, Policy | None] | None:
    """Store the alert, its notice to operators and its automatic switch in one transaction.

    ``notice(conn, alert_id, auto_action_taken)`` enqueues the notice in that transaction.

    Nothing is raised while an alert of the same rule raised since ``quiet_since``
    is still open or acknowledged, and only one replica evaluates at a time.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("select pg_try_advisory_xact_lock($1)", _ALERT_LOCK):
            return None
        recent = await conn.fetchval(
            "select exists (select 1 from alerts where rule_id = $1 and raised_at >= $2"
            " and status in ('open', 'acknowledged'))",
            rule_id,
            quiet_since,
        )
        if recent:
            return None
        alert_id = uuid.uuid4()
        policy = None
        action = ""
        if auto_action is not None:
            policy = await policies.change_policy_in(
                conn, auto_action, actor="risk:auto", reason=f"alert {rule_id} {alert_id}"
            )
            action = json.dumps(auto_action.describe(), sort_keys=True)
        await conn.execute(
            "insert into alerts (alert_id, rule_id, evidence, auto_action_taken)"
            " values ($1, $2, $3, $4)",
            alert_id,
            rule_id,
            evidence,
            action,
        )
        await notice(conn, alert_id, action)
    return alert_id, policy


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
