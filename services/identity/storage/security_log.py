"""The security log: what happened to an account, for its owner and operators.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.identity.domain.listings import SecurityEvent


async def log_event(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    kind: str,
    actor: str = "self",
    ip: str = "",
    device_id: str = "",
    session_id: uuid.UUID | str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "insert into security_events (id, account_id, kind, ip_address, device_id, session_id,"
        " actor, details) values ($1, $2, $3, $4, $5, $6, $7, $8)",
        uuid.uuid4(),
        account_id,
        kind,
        ip,
        device_id,
        str(session_id or ""),
        actor,
        details or {},
    )


async def security_events(
    conn: asyncpg.Connection,
    account_id: uuid.UUID,
    *,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[SecurityEvent]:
    rows = await conn.fetch(
        "select id, kind, occurred_at, ip_address, device_id, session_id, actor, details"
        " from security_events where account_id = $1"
        " and ($2::timestamptz is null or (occurred_at, id) < ($2, $3::uuid))"
        " order by occurred_at desc, id desc limit $4",
        account_id,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [
        SecurityEvent(
            event_id=row["id"],
            kind=row["kind"],
            occurred_at=row["occurred_at"],
            ip_address=row["ip_address"],
            device_id=row["device_id"],
            session_id=row["session_id"],
            actor=row["actor"],
            details=row["details"],
        )
        for row in rows
    ]
