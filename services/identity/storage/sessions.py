"""Sessions and their refresh tokens; ending them writes the revocations.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from services.identity.domain.listings import SessionSummary
from services.identity.storage import Record
from services.identity.storage.revocations import REVOCATIONS_CHANNEL


async def open_session(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    device_id: str,
    methods: Sequence[str],
    assurance_level: int,
    ip: str,
    lifetime: timedelta,
    refresh_hash: bytes,
) -> Record:
    row = await conn.fetchrow(
        "insert into sessions (id, account_id, device_id, methods, assurance_level, auth_time,"
        " ip_address, expires_at) values ($1, $2, $3, $4, $5, now(), $6, now() + $7)"
        " returning *",
        uuid.uuid4(),
        account_id,
        device_id,
        list(methods),
        assurance_level,
        ip,
        lifetime,
    )
    await conn.execute(
        "insert into refresh_tokens (token_hash, session_id) values ($1, $2)",
        refresh_hash,
        row["id"],
    )
    return row


async def session(conn: asyncpg.Connection, session_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("select * from sessions where id = $1", session_id)


async def live_sessions(conn: asyncpg.Connection, account_id: uuid.UUID) -> list[SessionSummary]:
    rows = await conn.fetch(
        "select id, device_id, methods, assurance_level, created_at, last_seen_at, ip_address"
        " from sessions where account_id = $1 and revoked_at is null"
        " and expires_at > now() order by created_at desc",
        account_id,
    )
    return [
        SessionSummary(
            session_id=row["id"],
            device_id=row["device_id"],
            methods=tuple(row["methods"]),
            assurance_level=row["assurance_level"],
            created_at=row["created_at"],
            last_seen_at=row["last_seen_at"],
            ip_address=row["ip_address"],
        )
        for row in rows
    ]


async def spend_refresh_token(conn: asyncpg.Connection, token_hash: bytes) -> Record | None:
    """Lock the token row and its session; the caller decides what a spent token means."""
    return await conn.fetchrow(
        "select r.spent_at, s.* from refresh_tokens r join sessions s on s.id = r.session_id"
        " where r.token_hash = $1 for update of r, s",
        token_hash,
    )


async def rotate_refresh_token(
    conn: asyncpg.Connection, *, old_hash: bytes, new_hash: bytes, session_id: uuid.UUID
) -> None:
    await conn.execute("update refresh_tokens set spent_at = now() where token_hash = $1", old_hash)
    await conn.execute(
        "insert into refresh_tokens (token_hash, session_id) values ($1, $2)", new_hash, session_id
    )
    await conn.execute("update sessions set last_seen_at = now() where id = $1", session_id)


async def add_refresh_token(
    conn: asyncpg.Connection, *, session_id: uuid.UUID, token_hash: bytes
) -> None:
    # Earlier refresh tokens of the session are spent: only the newest one is valid.
    await conn.execute(
        "update refresh_tokens set spent_at = now() where session_id = $1 and spent_at is null",
        session_id,
    )
    await conn.execute(
        "insert into refresh_tokens (token_hash, session_id) values ($1, $2)",
        token_hash,
        session_id,
    )


async def raise_session(
    conn: asyncpg.Connection, session_id: uuid.UUID, methods: Sequence[str], level: int
) -> Record:
    """A step-up: new methods are added and auth_time becomes now."""
    return await conn.fetchrow(
        "update sessions set methods = (select array_agg(distinct m) from"
        " unnest(methods || $2::text[]) m), assurance_level = greatest(assurance_level, $3),"
        " auth_time = now(), last_seen_at = now() where id = $1 returning *",
        session_id,
        list(methods),
        level,
    )


async def revoke_sessions(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    reason: str,
    token_lifetime: timedelta,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
    device_id: str | None = None,
) -> list[uuid.UUID]:
    """Revoke live sessions of an account (one, all but one, or one device's) and announce them."""
    ids = await conn.fetchval(
        """
        with revoked as (
            update sessions set revoked_at = now(), revoke_reason = $2
            where account_id = $1 and revoked_at is null
              and ($3::uuid is null or id = $3)
              and ($4::uuid is null or id <> $4)
              and ($5::text is null or device_id = $5)
            returning id
        ), announced as (
            insert into revocations (session_id, expires_at)
            select id, now() + $6 from revoked
        )
        select coalesce(array_agg(id), '{}') from revoked
        """,
        account_id,
        reason,
        only,
        keep,
        device_id,
        token_lifetime,
    )
    if ids:
        await end_begun_in_sessions(conn, account_id, ids)
        await conn.execute(f"notify {REVOCATIONS_CHANNEL}")
    return list(ids)


async def end_begun_in_sessions(
    conn: asyncpg.Connection, account_id: uuid.UUID, session_ids: Sequence[uuid.UUID]
) -> None:
    """What revoked sessions began and never finished ends with them: step-ups,
    passkey registrations and authenticator app enrolments. An enrolment does not
    record its session, so every pending one of the account ends (it is begun
    again in a minute; one left behind could be confirmed by another session)."""
    await conn.execute(
        "update challenges set completed_at = now()"
        " where session_id = any($1::uuid[]) and completed_at is null",
        list(session_ids),
    )
    await conn.execute(
        "update ceremonies set completed_at = now()"
        " where session_id = any($1::uuid[]) and completed_at is null",
        list(session_ids),
    )
    await conn.execute(
        "update factors set removed_at = now()"
        " where account_id = $1 and confirmed_at is null and removed_at is null",
        account_id,
    )


async def end_begun_with_old_credentials(
    conn: asyncpg.Connection, account_id: uuid.UUID, *, keep: uuid.UUID | None
) -> None:
    """A credential change ends everything begun before it that could still change
    the account or sign in to it: sign-in challenges (an email code begun with the
    old password), other sessions' step-ups, unused reset links, pending enrolments
    and the codes of contacts not yet verified.

    Run before the sessions are revoked: closing a challenge waits for an answer
    being checked under its row lock, so a sign-in finishing at this moment opens
    its session first and is then revoked with the others."""
    await conn.execute(
        "update challenges set completed_at = now() where account_id = $1"
        " and completed_at is null"
        " and (session_id is null or session_id is distinct from $2::uuid)",
        account_id,
        keep,
    )
    await conn.execute(
        "update password_resets set used_at = now() where account_id = $1 and used_at is null",
        account_id,
    )
    await conn.execute(
        "update factors set removed_at = now()"
        " where account_id = $1 and confirmed_at is null and removed_at is null",
        account_id,
    )
    await conn.execute(
        "update contacts set code_hash = null where account_id = $1 and not verified"
        " and removed_at is null and code_hash is not null",
        account_id,
    )
