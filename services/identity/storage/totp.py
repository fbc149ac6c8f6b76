"""TOTP factors and recovery codes.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from services.identity.domain.factors import Factor


async def create_pending_totp(
    conn: asyncpg.Connection, account_id: uuid.UUID, sealed_secret: bytes
) -> uuid.UUID:
    factor_id = uuid.uuid4()
    await conn.execute(
        "insert into factors (id, account_id, kind, name, sealed_totp_secret)"
        " values ($1, $2, 'totp', 'Authenticator app', $3)",
        factor_id,
        account_id,
        sealed_secret,
    )
    return factor_id


async def pending_totp(
    conn: asyncpg.Connection, factor_id: uuid.UUID, account_id: uuid.UUID
) -> Factor | None:
    row = await conn.fetchrow(
        "select * from factors where id = $1 and account_id = $2 and kind = 'totp'"
        " and confirmed_at is null and removed_at is null"
        " and created_at > now() - interval '1 hour'"
        " for update",
        factor_id,
        account_id,
    )
    return Factor.from_row(row) if row is not None else None


async def confirm_factor(conn: asyncpg.Connection, factor_id: uuid.UUID, step: int) -> Factor:
    row = await conn.fetchrow(
        "update factors set confirmed_at = now(), last_totp_step = $2, last_used_at = now()"
        " where id = $1 returning *",
        factor_id,
        step,
    )
    return Factor.from_row(row)


async def accept_totp_step(conn: asyncpg.Connection, factor_id: uuid.UUID, step: int) -> bool:
    """Accept a TOTP time step once: a replayed code (same or older step) is refused."""
    done = await conn.fetchval(
        "update factors set last_totp_step = $2, last_used_at = now() where id = $1"
        " and (last_totp_step is null or last_totp_step < $2) returning true",
        factor_id,
        step,
    )
    return bool(done)


async def has_recovery_codes(conn: asyncpg.Connection, account_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "select exists (select 1 from recovery_codes where account_id = $1"
            " and used_at is null)",
            account_id,
        )
    )


async def replace_recovery_codes(
    conn: asyncpg.Connection, account_id: uuid.UUID, hashes: Sequence[bytes]
) -> None:
    await conn.execute("delete from recovery_codes where account_id = $1", account_id)
    await conn.executemany(
        "insert into recovery_codes (account_id, code_hash) values ($1, $2)",
        [(account_id, code_hash) for code_hash in hashes],
    )


async def use_recovery_code(
    conn: asyncpg.Connection, account_id: uuid.UUID, code_hash: bytes
) -> bool:
    done = await conn.fetchval(
        "update recovery_codes set used_at = now() where account_id = $1 and code_hash = $2"
        " and used_at is null returning true",
        account_id,
        code_hash,
    )
    return bool(done)
