"""Outcomes: what happened after each decision, the signals they feed, and the
victim query that follows an attacker's sessions to the money they moved."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.risk.domain.outcomes import SIGNAL_OUTCOMES, OutcomeEvent
from services.risk.domain.victims import Movement

# A device first seen this recently is still "new" for the spend-after-top-up signal.
NEW_DEVICE_DAYS = 7

_KINDS = {"top_up_completed": "top_up", "payment_captured": "payment"}

_INSERT_OUTCOME = """
    insert into outcomes (outcome_id, outcome, decision_id, account_id, wallet_id,
        payer_id, session_id, ip, device_id, amount_minor, currency, movement_id,
        identifier_hash, occurred_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    on conflict do nothing
"""


def _outcome_row(event: OutcomeEvent) -> tuple[Any, ...]:
    return (
        uuid.uuid4(),
        event.outcome,
        event.decision_id,
        event.account_id,
        event.wallet_id,
        event.payer_id,
        event.session_id,
        event.ip,
        event.device_id,
        event.amount_minor,
        event.currency,
        event.movement_id,
        event.identifier_hash,
        event.occurred_at,
    )


async def record_outcome(pool: asyncpg.Pool, event: OutcomeEvent) -> bool:
    """Store the event and update the state it feeds, in one transaction; False when
    the event was stored before (a retried report of the same money movement)."""
    if event.outcome not in SIGNAL_OUTCOMES:
        status = await pool.execute(_INSERT_OUTCOME, *_outcome_row(event))
        return bool(status.endswith(" 1"))
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.execute(_INSERT_OUTCOME, *_outcome_row(event))
        if event.outcome == "login_succeeded" and event.account_id:
            await conn.execute(
                """
                insert into account_state (account_id, last_login_at, last_login_ip,
                    last_login_country)
                values ($1, $2, $3, nullif($4, ''))
                on conflict (account_id) do update set last_login_at = excluded.last_login_at,
                    last_login_ip = excluded.last_login_ip,
                    last_login_country = excluded.last_login_country
                where account_state.last_login_at is null
                   or account_state.last_login_at <= excluded.last_login_at
                """,
                event.account_id,
                event.occurred_at,
                event.ip,
                event.country,
            )
            if event.device_id:
                await conn.execute(
                    "insert into account_devices (account_id, device_id, first_seen_at)"
                    " values ($1, $2, $3) on conflict do nothing",
                    event.account_id,
                    event.device_id,
                    event.occurred_at,
                )
            if event.session_id:
                await conn.execute(
                    "insert into sessions (session_id, account_id, ip, device_id, started_at)"
                    " values ($1, $2, $3, $4, $5) on conflict do nothing",
                    event.session_id,
                    event.account_id,
                    event.ip,
                    event.device_id,
                    event.occurred_at,
                )
        elif event.outcome == "credential_changed" and event.account_id:
            await conn.execute(
                """
                insert into account_state (account_id, last_credential_change_at)
                values ($1, $2)
                on conflict (account_id) do update
                    set last_credential_change_at = greatest(
                        account_state.last_credential_change_at, excluded.last_credential_change_at)
                """,
                event.account_id,
                event.occurred_at,
            )
        elif event.outcome == "top_up_completed" and event.wallet_id:
            await conn.execute(
                """
                insert into wallet_state (wallet_id, last_top_up_at, last_top_up_from_new_device)
                select $1, $2, exists (
                    select 1 from sessions s
                    join account_devices d on d.account_id = s.account_id
                     and d.device_id = coalesce(nullif($4, ''), s.device_id)
                    where s.session_id = $3
                      and d.first_seen_at > $2::timestamptz - make_interval(days => $5::int)
                      -- A device is new to an account that had one before it; a new
                      -- customer's first phone is theirs and must pay at once.
                      and exists (
                          select 1 from account_devices earlier
                          where earlier.account_id = d.account_id
                            and earlier.first_seen_at < d.first_seen_at))
                on conflict (wallet_id) do update
                    set last_top_up_at = excluded.last_top_up_at,
                        last_top_up_from_new_device = excluded.last_top_up_from_new_device
                where wallet_state.last_top_up_at <= excluded.last_top_up_at
                """,
                event.wallet_id,
                event.occurred_at,
                event.session_id,
                event.device_id,
                NEW_DEVICE_DAYS,
            )
        return bool(status.endswith(" 1"))


_INSERT_OUTCOMES = """
    insert into outcomes (outcome_id, outcome, decision_id, account_id, wallet_id,
        payer_id, session_id, ip, device_id, amount_minor, currency, movement_id,
        identifier_hash, occurred_at)
    select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[],
        $12::text[], $13::text[], $14::timestamptz[])
    on conflict do nothing
    returning outcome_id
"""


async def record_plain_outcomes(pool: asyncpg.Pool, events: Sequence[OutcomeEvent]) -> list[bool]:
    """Store outcomes that feed no stored state in one statement; per event, False
    when it was stored before (a retried report of the same money movement)."""
    if any(event.outcome in SIGNAL_OUTCOMES for event in events):
        raise ValueError("an outcome that feeds stored state is recorded on its own")
    if not events:
        return []
    rows = [_outcome_row(event) for event in events]
    columns = [list(column) for column in zip(*rows, strict=True)]
    stored = {row[0] for row in await pool.fetch(_INSERT_OUTCOMES, *columns)}
    return [row[0] in stored for row in rows]


async def find_affected(
    pool: asyncpg.Pool,
    *,
    ips: Sequence[str],
    subnets: Sequence[str],
    devices: Sequence[str],
    start: datetime,
    end: datetime,
) -> list[tuple[str, str, Movement | None]]:
    """Sessions from the indicators in the window, each with a money movement made in
    it (or None): (account_id, session_id, movement).

    Ordered on every column, so the same stored events always give the same answer.
    """
    rows = await pool.fetch(
        """
        with attacker_sessions as (
            select distinct account_id, session_id from outcomes
            where outcome = 'login_succeeded' and account_id <> ''
              and occurred_at >= $4 and occurred_at < $5
              and (ip = any($1::text[]) or (device_id <> '' and device_id = any($3::text[]))
                   or (ip <> '' and ip::inet <<= any($2::inet[])))
        )
        select s.account_id, s.session_id, m.movement_id, m.wallet_id, m.outcome,
               m.amount_minor, m.currency, m.occurred_at
        from attacker_sessions s
        left join outcomes m on s.session_id <> '' and m.session_id = s.session_id
             and m.outcome in ('top_up_completed', 'payment_captured')
             and m.occurred_at >= $4
        order by s.account_id, s.session_id, m.occurred_at, m.movement_id
        """,
        list(ips),
        list(subnets),
        list(devices),
        start,
        end,
    )
    return [
        (
            row["account_id"],
            row["session_id"],
            None
            if row["movement_id"] is None
            else Movement(
                movement_id=row["movement_id"],
                wallet_id=row["wallet_id"] or "",
                kind=_KINDS.get(row["outcome"] or "", ""),
                amount_minor=row["amount_minor"] or 0,
                currency=row["currency"] or "",
                occurred_at=row["occurred_at"],
                session_id=row["session_id"],
            ),
        )
        for row in rows
    ]
