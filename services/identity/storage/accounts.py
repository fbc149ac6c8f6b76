"""Accounts: registration, status, password, failure counters and profile.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.identity.storage import Record
from services.identity.storage.contacts import EMAIL
from services.runtime.device_proof import ProvenDevice


async def account(conn: asyncpg.Connection, account_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("select * from accounts where id = $1", account_id)


async def account_for_update(conn: asyncpg.Connection, account_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("select * from accounts where id = $1 for update", account_id)


async def account_by_login(conn: asyncpg.Connection, login_key: str) -> Record | None:
    """The account whose verified email has this look-up form, if any."""
    return await conn.fetchrow(
        "select a.* from contacts c join accounts a on a.id = c.account_id where c.login_key = $1",
        login_key,
    )


async def login_candidate(
    conn: asyncpg.Connection | asyncpg.Pool,
    login_key: str,
    proof: ProvenDevice | None,
) -> Record | None:
    """The account signing in with this identifier, whether the request's proof was
    fresh (``proof_fresh``) and its key registered to the account (``known_device``),
    in one statement.

    The proof is spent in the same statement, whether or not the account exists (the
    same work either way): a proof seen before makes the device unknown.
    """
    return await conn.fetchrow(
        "with spent as (insert into device_proofs (thumbprint, jti, expires_at)"
        " select $2, $3, to_timestamp($4) where $2::text is not null"
        " on conflict do nothing returning thumbprint)"
        " select a.*, exists (select 1 from spent) as proof_fresh,"
        " exists (select 1 from spent) and exists (select 1 from devices d"
        " where d.account_id = a.id and d.device_id = $2 and d.removed_at is null)"
        " as known_device"
        " from contacts c join accounts a on a.id = c.account_id where c.login_key = $1",
        login_key,
        proof.thumbprint if proof is not None else None,
        proof.jti if proof is not None else None,
        proof.remember_until if proof is not None else 0.0,
    )


async def set_registration_device(
    conn: asyncpg.Connection, account_id: uuid.UUID, thumbprint: str | None
) -> None:
    await conn.execute(
        "update accounts set registration_device_id = $2 where id = $1", account_id, thumbprint
    )


async def account_by_payer(conn: asyncpg.Connection, payer_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("select * from accounts where payer_id = $1", payer_id)


async def lock_address(conn: asyncpg.Connection, login_key: str) -> None:
    """Serialise, until the transaction ends, everything that registers, verifies or
    takes this address, so two verifications cannot both claim it."""
    await conn.execute(
        "select pg_advisory_xact_lock(hashtextextended($1, 0))", f"identity-address:{login_key}"
    )


async def pending_registration(
    conn: asyncpg.Connection, login_key: str, device_id: str
) -> Record | None:
    """The live registration of this address made from this device (a pending account
    with its own password, profile and code); registrations from other devices are
    other people's and never answer for this one."""
    return await conn.fetchrow(
        "select c.id as contact_id, c.account_id, c.code_hash, c.code_expires_at,"
        " c.code_attempts from contacts c join accounts a on a.id = c.account_id"
        " where c.address_key = $1 and a.status = 'pending' and c.removed_at is null"
        " and a.registration_device_id = $2 order by c.created_at desc limit 1",
        login_key,
        device_id,
    )


async def end_pending_registrations(
    conn: asyncpg.Connection, login_key: str, *, device_id: str | None = None
) -> None:
    """End the address's live registrations (only those from ``device_id`` when given):
    their codes stop working and their pending accounts can never become active."""
    await conn.execute(
        "update contacts c set removed_at = now(), code_hash = null from accounts a"
        " where a.id = c.account_id and a.status = 'pending' and c.address_key = $1"
        " and c.removed_at is null and ($2::text is null or a.registration_device_id = $2)",
        login_key,
        device_id,
    )


async def create_pending_account(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    payer_id: uuid.UUID,
    password_hash: str,
    display_name: str | None,
    language: int,
    device_id: str | None,
    email: str,
    login_key: str,
    code_hash: bytes,
    code_expires_at: datetime,
) -> uuid.UUID:
    await conn.execute(
        "insert into accounts (id, status, payer_id, password_hash, display_name, language,"
        " registration_device_id) values ($1, 'pending', $2, $3, $4, $5, $6)",
        account_id,
        payer_id,
        password_hash,
        display_name,
        language,
        device_id,
    )
    contact_id = uuid.uuid4()
    await conn.execute(
        "insert into contacts (id, account_id, kind, address, address_key, is_primary,"
        " make_primary, code_hash, code_expires_at)"
        " values ($1, $2, $3, $4, $5, false, true, $6, $7)",
        contact_id,
        account_id,
        EMAIL,
        email,
        login_key,
        code_hash,
        code_expires_at,
    )
    return contact_id


async def count_code_attempt(conn: asyncpg.Connection, contact_id: uuid.UUID) -> None:
    await conn.execute(
        "update contacts set code_attempts = code_attempts + 1 where id = $1", contact_id
    )


async def activate_account(
    conn: asyncpg.Connection, *, account_id: uuid.UUID, contact_id: uuid.UUID, login_key: str
) -> bool:
    """Verify the registration address; False when another account took it meanwhile."""
    taken = await conn.fetchval("select 1 from contacts where login_key = $1", login_key)
    if taken:
        return False
    await conn.execute(
        "update contacts set verified = true, is_primary = true, make_primary = false,"
        " verified_at = now(), code_hash = null, login_key = $2 where id = $1",
        contact_id,
        login_key,
    )
    await conn.execute("update accounts set status = 'active' where id = $1", account_id)
    return True


async def set_password(conn: asyncpg.Connection, account_id: uuid.UUID, password_hash: str) -> None:
    await conn.execute(
        "update accounts set password_hash = $2, password_expired = false where id = $1",
        account_id,
        password_hash,
    )


async def record_failure(conn: asyncpg.Connection, account_id: uuid.UUID) -> None:
    await conn.execute(
        "update accounts set recent_failures = recent_failures + 1 where id = $1", account_id
    )


async def clear_failures(conn: asyncpg.Connection, account_id: uuid.UUID) -> None:
    await conn.execute(
        "update accounts set recent_failures = 0 where id = $1 and recent_failures <> 0",
        account_id,
    )


async def start_cooloff(conn: asyncpg.Connection, account_id: uuid.UUID, length: timedelta) -> None:
    await conn.execute(
        # A change during a cool-off extends it but keeps its start, so a passkey enrolled
        # inside it never counts as "enrolled before the change".
        "update accounts set cooloff_started_at = case when cooloff_until > now()"
        " then cooloff_started_at else now() end,"
        " cooloff_until = greatest(coalesce(cooloff_until, now()), now() + $2) where id = $1",
        account_id,
        length,
    )


async def set_status(conn: asyncpg.Connection, account_id: uuid.UUID, status: str) -> None:
    await conn.execute(
        "update accounts set status = $2,"
        " closed_at = case when $2 = 'closed' then now() else closed_at end where id = $1",
        account_id,
        status,
    )


async def release_logins(conn: asyncpg.Connection, account_id: uuid.UUID) -> None:
    """A closed account no longer holds its addresses."""
    await conn.execute("update contacts set login_key = null where account_id = $1", account_id)


async def update_profile(
    conn: asyncpg.Connection, account_id: uuid.UUID, changes: dict[str, Any]
) -> None:
    columns = ("display_name", "family_name", "given_name", "birth_date", "language")
    assignments = []
    values: list[Any] = [account_id]
    for column in columns:
        if column in changes:
            values.append(changes[column])
            assignments.append(f"{column} = ${len(values)}")
    if assignments:
        # Column names come from the fixed tuple above; values are bound.
        await conn.execute(
            f"update accounts set {', '.join(assignments)} where id = $1",  # noqa: S608
            *values,
        )
