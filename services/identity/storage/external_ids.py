"""External identities linked to accounts, and the nonces of their sign-ins.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg


async def create_external_nonce(
    conn: asyncpg.Connection, *, nonce: str, provider: str, lifetime: timedelta
) -> None:
    await conn.execute(
        "insert into external_nonces (nonce, provider, expires_at) values ($1, $2, now() + $3)",
        nonce,
        provider,
        lifetime,
    )


async def use_external_nonce(conn: asyncpg.Connection, nonce: str, provider: str) -> bool:
    done = await conn.fetchval(
        "update external_nonces set used_at = now() where nonce = $1 and provider = $2"
        " and used_at is null and expires_at > now() returning true",
        nonce,
        provider,
    )
    return bool(done)


async def external_account(
    conn: asyncpg.Connection, provider: str, subject: str
) -> uuid.UUID | None:
    account_id: uuid.UUID | None = await conn.fetchval(
        "select account_id from external_identities where provider = $1 and subject = $2",
        provider,
        subject,
    )
    return account_id


async def link_external(
    conn: asyncpg.Connection, *, provider: str, subject: str, account_id: uuid.UUID
) -> bool:
    """Link; False when the external ID already belongs to an account or the account has one."""
    taken = await conn.fetchval(
        "select 1 from external_identities where (provider = $1 and subject = $2)"
        " or (provider = $1 and account_id = $3)",
        provider,
        subject,
        account_id,
    )
    if taken:
        return False
    await conn.execute(
        "insert into external_identities (provider, subject, account_id) values ($1, $2, $3)",
        provider,
        subject,
        account_id,
    )
    return True


async def unlink_external(
    conn: asyncpg.Connection, *, provider: str, account_id: uuid.UUID
) -> bool:
    done = await conn.fetchval(
        "delete from external_identities where provider = $1 and account_id = $2 returning true",
        provider,
        account_id,
    )
    return bool(done)
