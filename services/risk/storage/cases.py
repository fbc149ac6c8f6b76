"""Fraud cases: opened once per idempotency key, worked on by operators."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from services.risk.domain.cases import Case, Indicators

_COLUMNS = (
    "case_id, status, source, account_id, wallet_id, alert_id, movement_id, assignee, notes,"
    " indicators, opened_at, updated_at"
)


def _case(row: asyncpg.Record | None) -> Case | None:
    if row is None:
        return None
    stored = row["indicators"]
    return Case(
        case_id=row["case_id"],
        status=row["status"],
        source=row["source"],
        account_id=row["account_id"],
        wallet_id=row["wallet_id"],
        alert_id=row["alert_id"],
        movement_id=row["movement_id"],
        assignee=row["assignee"],
        notes=tuple(row["notes"]),
        indicators=None if stored is None else Indicators.from_document(stored),
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
    )


async def open_case(
    pool: asyncpg.Pool,
    *,
    idempotency_key: str,
    source: str,
    account_id: str,
    wallet_id: str,
    alert_id: str,
    movement_id: str,
    description: str,
) -> Case:
    """Open a case once per idempotency key; a retry returns the first case."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""
            insert into cases (case_id, idempotency_key, source, account_id, wallet_id,
                alert_id, movement_id, notes)
            values ($1, $2, $3, $4, $5, $6, $7, $8)
            on conflict (idempotency_key) do nothing
            returning {_COLUMNS}
            """,  # noqa: S608 - the column list is a constant
            uuid.uuid4(),
            idempotency_key,
            source,
            account_id,
            wallet_id,
            alert_id,
            movement_id,
            [description] if description else [],
        )
        if row is None:
            row = await conn.fetchrow(
                f"select {_COLUMNS} from cases where idempotency_key = $1",  # noqa: S608
                idempotency_key,
            )
    case = _case(row)
    assert case is not None
    return case


async def get_case(pool: asyncpg.Pool, case_id: uuid.UUID) -> Case | None:
    return _case(
        await pool.fetchrow(
            f"select {_COLUMNS} from cases where case_id = $1",  # noqa: S608
            case_id,
        )
    )


async def list_cases(
    pool: asyncpg.Pool, *, status: str, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[Case]:
    """Newest first; ``after`` is the (opened_at, case_id) of the previous page's last."""
    rows = await pool.fetch(
        f"""
        select {_COLUMNS} from cases
        where ($1 = '' or status = $1)
          and ($3::timestamptz is null or opened_at < $3
               or (opened_at = $3 and case_id > $4::uuid))
        order by opened_at desc, case_id limit $2
        """,  # noqa: S608 - the column list is a constant
        status,
        limit,
        after[0] if after else None,
        after[1] if after else None,
    )
    return [case for case in map(_case, rows) if case is not None]


async def update_case(
    pool: asyncpg.Pool,
    case_id: uuid.UUID,
    *,
    status: str | None,
    assignee: str | None,
    note: str | None,
    indicators: Indicators | None = None,
) -> Case | None:
    row = await pool.fetchrow(
        f"""
        update cases set status = coalesce($2, status), assignee = coalesce($3, assignee),
            notes = case when $4::text is null then notes else notes || to_jsonb($4::text) end,
            indicators = coalesce($5, indicators), updated_at = now()
        where case_id = $1
        returning {_COLUMNS}
        """,  # noqa: S608 - the column list is a constant
        case_id,
        status,
        assignee,
        note,
        None if indicators is None else indicators.to_document(),
    )
    return _case(row)
