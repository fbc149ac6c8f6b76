"""Factors of every kind: listing, suspending, removing.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.identity.domain.factors import Factor


async def factors(conn: asyncpg.Connection, account_id: uuid.UUID) -> list[Factor]:
    rows = await conn.fetch(
        "select * from factors where account_id = $1 and removed_at is null"
        " and confirmed_at is not null order by created_at",
        account_id,
    )
    return [Factor.from_row(row) for row in rows]


async def ever_had_factor(conn: asyncpg.Connection, account_id: uuid.UUID) -> bool:
    """Whether the account has ever confirmed a factor, removed since or not."""
    return bool(
        await conn.fetchval(
            "select exists (select 1 from factors where account_id = $1"
            " and confirmed_at is not null)",
            account_id,
        )
    )


async def factor(conn: asyncpg.Connection, factor_id: uuid.UUID) -> Factor | None:
    row = await conn.fetchrow(
        "select * from factors where id = $1 and removed_at is null", factor_id
    )
    return Factor.from_row(row) if row is not None else None


async def suspend_factor(conn: asyncpg.Connection, factor_id: uuid.UUID) -> None:
    await conn.execute("update factors set suspended = true where id = $1", factor_id)


async def remove_factor(conn: asyncpg.Connection, factor_id: uuid.UUID) -> None:
    await conn.execute("update factors set removed_at = now() where id = $1", factor_id)
