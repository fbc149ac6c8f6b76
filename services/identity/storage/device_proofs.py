"""Spent device proofs: each proof is accepted once.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import asyncpg

from services.runtime.device_proof import ProvenDevice


async def spend_device_proof(conn: asyncpg.Connection | asyncpg.Pool, proof: ProvenDevice) -> bool:
    """Remember a proof's ``jti``; False when it was used before (a replay)."""
    spent = await conn.fetchval(
        "insert into device_proofs (thumbprint, jti, expires_at)"
        " values ($1, $2, to_timestamp($3)) on conflict do nothing returning true",
        proof.thumbprint,
        proof.jti,
        proof.remember_until,
    )
    return bool(spent)


async def purge_device_proofs(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Forget proofs too old to be accepted anyway."""
    done = await conn.execute("delete from device_proofs where expires_at < now()")
    return int(done.split()[-1])
