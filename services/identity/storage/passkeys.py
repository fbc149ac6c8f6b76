"""Passkeys.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.identity.domain.factors import Factor


async def add_passkey(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    name: str,
    credential_id: bytes,
    public_key: bytes,
    sign_count: int,
) -> Factor:
    row = await conn.fetchrow(
        "insert into factors (id, account_id, kind, name, credential_id, public_key, sign_count,"
        " confirmed_at) values ($1, $2, 'passkey', $3, $4, $5, $6, now()) returning *",
        uuid.uuid4(),
        account_id,
        name,
        credential_id,
        public_key,
        sign_count,
    )
    return Factor.from_row(row)


async def passkey_by_credential(conn: asyncpg.Connection, credential_id: bytes) -> Factor | None:
    row = await conn.fetchrow(
        "select * from factors where credential_id = $1 and removed_at is null for update",
        credential_id,
    )
    return Factor.from_row(row) if row is not None else None


async def record_passkey_use(conn: asyncpg.Connection, factor_id: uuid.UUID, count: int) -> None:
    await conn.execute(
        "update factors set sign_count = $2, last_used_at = now() where id = $1", factor_id, count
    )
