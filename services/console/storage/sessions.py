"""SQL of sessions and failed sign-ins; a session is stored by the hash of its cookie."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import asyncpg

from services.console.domain.records import Session

FAILURE_WINDOW = timedelta(minutes=15)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create(
    pool: asyncpg.Pool, token: str, operator: str, csrf_token: str, expires_at: datetime
) -> None:
    await pool.execute(
        "insert into console_sessions (session_hash, operator, csrf_token, expires_at)"
        " values ($1, $2, $3, $4)",
        _hash(token),
        operator,
        csrf_token,
        expires_at,
    )


async def find(pool: asyncpg.Pool, token: str) -> Session | None:
    row = await pool.fetchrow(
        "select operator, csrf_token, expires_at from console_sessions"
        " where session_hash = $1 and expires_at > now()",
        _hash(token),
    )
    return None if row is None else Session(row["operator"], row["csrf_token"], row["expires_at"])


async def end(pool: asyncpg.Pool, token: str) -> None:
    await pool.execute("delete from console_sessions where session_hash = $1", _hash(token))


async def recent_failures(pool: asyncpg.Pool, operator: str, client: str = "") -> int:
    count = await pool.fetchval(
        "select count(*) from console_sign_in_failures"
        " where operator = $1 and client = $2 and failed_at > now() - $3::interval",
        operator,
        client,
        FAILURE_WINDOW,
    )
    return int(count or 0)


async def record_failure(pool: asyncpg.Pool, operator: str, client: str = "") -> None:
    await pool.execute(
        "insert into console_sign_in_failures (operator, client) values ($1, $2)",
        operator,
        client,
    )


async def forget_expired(pool: asyncpg.Pool) -> None:
    await pool.execute("delete from console_sessions where expires_at < now()")
    await pool.execute(
        "delete from console_sign_in_failures where failed_at < now() - $1::interval",
        FAILURE_WINDOW,
    )
