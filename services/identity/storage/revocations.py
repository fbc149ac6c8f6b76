"""The revocation stream other services follow.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.identity.storage import Record

REVOCATIONS_CHANNEL = "identity_revocations"


async def revocations_after(
    conn: asyncpg.Connection | asyncpg.Pool, sequence: int, limit: int = 1000
) -> list[Record]:
    return list(
        await conn.fetch(
            "select sequence, session_id, expires_at from revocations"
            " where sequence > $1 and expires_at > now() order by sequence limit $2",
            sequence,
            limit,
        )
    )


async def revocations_among(
    conn: asyncpg.Connection | asyncpg.Pool, sequences: Sequence[int]
) -> list[Record]:
    """The rows, expired ones too (``live`` false), that now exist among ``sequences``."""
    return list(
        await conn.fetch(
            "select sequence, session_id, expires_at, expires_at > now() as live"
            " from revocations where sequence = any($1::bigint[]) order by sequence",
            list(sequences),
        )
    )
