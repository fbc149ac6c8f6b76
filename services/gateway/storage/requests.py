"""Per-request bookkeeping: idempotency keys and rate windows. SQL only."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.gateway.domain.idempotency import StoredAnswer


async def claim_key(
    db: asyncpg.Pool | asyncpg.Connection,
    partner_id: uuid.UUID,
    key: str,
    operation: str,
    body_hash: str,
) -> tuple[str, StoredAnswer | None]:
    """("new" | "same" | "different", the stored answer if the first call finished)."""
    row = await db.fetchrow(
        """
        with claimed as (
            insert into idempotency_keys (partner_id, idempotency_key, operation, body_hash)
            values ($1, $2, $3, $4)
            on conflict do nothing
            returning true as fresh
        )
        select true as fresh, null::text as operation, null::text as body_hash,
               null::int as status_code, null::jsonb as response from claimed
        union all
        select false, operation, body_hash, status_code, response from idempotency_keys
        where partner_id = $1 and idempotency_key = $2 and not exists (select 1 from claimed)
        """,
        partner_id,
        key,
        operation,
        body_hash,
    )
    if row is None or row["fresh"]:
        return "new", None
    if row["operation"] != operation or row["body_hash"] != body_hash:
        return "different", None
    if row["status_code"] is None:
        return "same", None
    return "same", StoredAnswer(row["status_code"], row["response"])


async def store_answer(
    conn: asyncpg.Connection,
    partner_id: uuid.UUID,
    key: str,
    status_code: int,
    body: dict[str, Any],
) -> bool:
    """Record the first final answer; False when another request already did."""
    result = await conn.execute(
        "update idempotency_keys set status_code = $3, response = $4"
        " where partner_id = $1 and idempotency_key = $2 and status_code is null",
        partner_id,
        key,
        status_code,
        body,
    )
    return str(result).endswith(" 1")


async def count_request(
    db: asyncpg.Pool | asyncpg.Connection, partner_id: uuid.UUID
) -> tuple[int, float]:
    """This minute's request count after this one, and seconds until the minute ends."""
    row = await db.fetchrow(
        """
        insert into rate_windows (partner_id, window_start, requests)
        values ($1, date_trunc('minute', now()), 1)
        on conflict (partner_id, window_start)
        do update set requests = rate_windows.requests + 1
        returning requests,
                  extract(epoch from date_trunc('minute', now()) + interval '1 minute' - now())
                      ::float8 as remaining
        """,
        partner_id,
    )
    assert row is not None
    return int(row["requests"]), float(row["remaining"])
