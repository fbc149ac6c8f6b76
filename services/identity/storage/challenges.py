"""Sign-in and step-up challenges, and WebAuthn ceremonies.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from services.identity.storage import Record


async def create_challenge(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    purpose: str,
    session_id: uuid.UUID | None,
    device_id: str,
    ip: str,
    user_agent: str,
    methods: Sequence[str],
    risk_decision_id: str,
    known_device: bool,
    lifetime: timedelta,
) -> Record:
    return await conn.fetchrow(
        "insert into challenges (id, account_id, purpose, session_id, device_id, ip_address,"
        " user_agent, methods, risk_decision_id, known_device, expires_at)"
        " values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + $11) returning *",
        uuid.uuid4(),
        account_id,
        purpose,
        session_id,
        device_id,
        ip,
        user_agent,
        list(methods),
        risk_decision_id,
        known_device,
        lifetime,
    )


async def open_challenge(conn: asyncpg.Connection, challenge_id: uuid.UUID) -> Record | None:
    """A challenge that can still be answered, locked for this answer."""
    return await conn.fetchrow(
        "select * from challenges where id = $1 and completed_at is null and expires_at > now()"
        " for update",
        challenge_id,
    )


async def set_challenge_email_code(
    conn: asyncpg.Connection, challenge_id: uuid.UUID, code_hash: bytes, expires_at: datetime
) -> None:
    await conn.execute(
        "update challenges set email_code_hash = $2, email_code_expires_at = $3 where id = $1",
        challenge_id,
        code_hash,
        expires_at,
    )


async def set_challenge_webauthn(
    conn: asyncpg.Connection, challenge_id: uuid.UUID, webauthn_challenge: bytes
) -> None:
    await conn.execute(
        "update challenges set webauthn_challenge = $2 where id = $1",
        challenge_id,
        webauthn_challenge,
    )


async def fail_challenge(conn: asyncpg.Connection, challenge_id: uuid.UUID, limit: int) -> None:
    await conn.execute(
        "update challenges set attempts = attempts + 1,"
        " completed_at = case when attempts + 1 >= $2 then now() end where id = $1",
        challenge_id,
        limit,
    )


async def complete_challenge(conn: asyncpg.Connection, challenge_id: uuid.UUID) -> None:
    await conn.execute("update challenges set completed_at = now() where id = $1", challenge_id)


async def create_ceremony(
    conn: asyncpg.Connection,
    *,
    purpose: str,
    account_id: uuid.UUID | None,
    session_id: uuid.UUID | None,
    device_id: str,
    webauthn_challenge: bytes,
    lifetime: timedelta,
) -> uuid.UUID:
    ceremony_id = uuid.uuid4()
    await conn.execute(
        "insert into ceremonies (id, purpose, account_id, session_id, device_id,"
        " webauthn_challenge, expires_at) values ($1, $2, $3, $4, $5, $6, now() + $7)",
        ceremony_id,
        purpose,
        account_id,
        session_id,
        device_id,
        webauthn_challenge,
        lifetime,
    )
    return ceremony_id


async def take_ceremony(
    conn: asyncpg.Connection, ceremony_id: uuid.UUID, purpose: str
) -> Record | None:
    """Spend a ceremony: each WebAuthn challenge is answered at most once."""
    return await conn.fetchrow(
        "update ceremonies set completed_at = now() where id = $1 and purpose = $2"
        " and completed_at is null and expires_at > now() returning *",
        ceremony_id,
        purpose,
    )
