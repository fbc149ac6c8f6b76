"""Payments made through the gateway, as the wallet answered them. SQL only."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from services.gateway.domain.payments import PaymentRecord

_COLUMNS = (
    "payment_id, partner_id, merchant_id, store_id, authorization_id, movement_id, status,"
    " amount_minor, currency, refunded_minor, occurred_at, hold_expires_at"
)


def _record(row: asyncpg.Record) -> PaymentRecord:
    return PaymentRecord(**dict(row))


async def save(conn: asyncpg.Connection, payment: PaymentRecord) -> None:
    """Insert or bring up to date; the first partner to record a payment keeps it."""
    await conn.execute(
        f"""
        insert into payments ({_COLUMNS})
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        on conflict (payment_id) do update set
            movement_id = excluded.movement_id, status = excluded.status,
            amount_minor = excluded.amount_minor, refunded_minor = excluded.refunded_minor,
            updated_at = now()
        """,  # noqa: S608 - the column list is a constant
        payment.payment_id,
        payment.partner_id,
        payment.merchant_id,
        payment.store_id,
        payment.authorization_id,
        payment.movement_id,
        payment.status,
        payment.amount_minor,
        payment.currency,
        payment.refunded_minor,
        payment.occurred_at,
        payment.hold_expires_at,
    )


async def get(db: asyncpg.Pool | asyncpg.Connection, payment_id: str) -> PaymentRecord | None:
    row = await db.fetchrow(
        f"select {_COLUMNS} from payments where payment_id = $1",  # noqa: S608
        payment_id,
    )
    return None if row is None else _record(row)


async def list_for_store(
    db: asyncpg.Pool | asyncpg.Connection,
    partner_id: uuid.UUID,
    store_id: uuid.UUID,
    *,
    limit: int,
    before: tuple[datetime, str] | None,
) -> list[PaymentRecord]:
    """The partner's own, newest first; ``before`` is the (time, id) of the last row of
    the previous page."""
    rows = await db.fetch(
        f"select {_COLUMNS} from payments where store_id = $1 and partner_id = $5"  # noqa: S608
        " and ($2::timestamptz is null or (occurred_at, payment_id) < ($2, $3))"
        " order by occurred_at desc, payment_id desc limit $4",
        store_id,
        before[0] if before else None,
        before[1] if before else "",
        limit,
        partner_id,
    )
    return [_record(row) for row in rows]
