"""Signing keys, stored sealed: at most one each of current, previous and next.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import asyncpg

from services.identity.storage import Record

_LOCK = int.from_bytes(b"id-keys!", "big")


async def lock_ring(conn: asyncpg.Connection) -> None:
    """Hold the ring for this transaction: one replica rotates at a time."""
    await conn.execute("select pg_advisory_xact_lock($1)", _LOCK)


async def current_key(conn: asyncpg.Connection) -> Record | None:
    return await conn.fetchrow("select kid, activated_at from signing_keys where state = 'current'")


async def next_kid(conn: asyncpg.Connection) -> str | None:
    kid: str | None = await conn.fetchval("select kid from signing_keys where state = 'next'")
    return kid


async def insert_key(conn: asyncpg.Connection, *, kid: str, state: str, sealed: bytes) -> None:
    await conn.execute(
        "insert into signing_keys (kid, state, sealed_private_key, activated_at)"
        " values ($1, $2, $3, case when $2 = 'current' then now() end)",
        kid,
        state,
        sealed,
    )


async def promote_next(conn: asyncpg.Connection, kid: str) -> None:
    """Retire the previous key, keep the current one as previous, and let ``kid`` sign."""
    await conn.execute(
        "update signing_keys set state = 'retired', retired_at = now() where state = 'previous'"
    )
    await conn.execute("update signing_keys set state = 'previous' where state = 'current'")
    await conn.execute(
        "update signing_keys set state = 'current', activated_at = now() where kid = $1", kid
    )


async def published_keys(conn: asyncpg.Connection | asyncpg.Pool) -> list[Record]:
    return list(
        await conn.fetch(
            "select kid, state, sealed_private_key from signing_keys"
            " where state in ('current', 'previous', 'next')"
        )
    )
