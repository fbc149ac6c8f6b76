"""Contacts (email, phone, push) and the freeze links that undo a change.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from services.identity.storage import Record

EMAIL = 1


# Where a code notice carries its link (as in notices.CODE_SECRET).
CODE_SECRET = ("code", "secret")


async def contacts(
    conn: asyncpg.Connection, account_id: uuid.UUID, *, verified_only: bool
) -> list[Record]:
    return list(
        await conn.fetch(
            "select * from contacts where account_id = $1 and removed_at is null"
            " and (verified or not $2) order by is_primary desc, created_at",
            account_id,
            verified_only,
        )
    )


async def contact(conn: asyncpg.Connection, contact_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow(
        "select * from contacts where id = $1 and removed_at is null", contact_id
    )


async def primary_email(conn: asyncpg.Connection, account_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow(
        "select * from contacts where account_id = $1 and kind = $2 and verified"
        " and is_primary and removed_at is null",
        account_id,
        EMAIL,
    )


async def add_contact(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    kind: int,
    address: str,
    address_key: str,
    make_primary: bool,
    code_hash: bytes,
    code_expires_at: datetime,
) -> Record:
    return await conn.fetchrow(
        "insert into contacts (id, account_id, kind, address, address_key, make_primary,"
        " code_hash, code_expires_at) values ($1, $2, $3, $4, $5, $6, $7, $8) returning *",
        uuid.uuid4(),
        account_id,
        kind,
        address,
        address_key,
        make_primary,
        code_hash,
        code_expires_at,
    )


async def verify_contact(conn: asyncpg.Connection, contact: Record) -> Record | None:
    """Mark verified; becomes primary if asked. None when the address belongs elsewhere."""
    login_key = contact["address_key"] if contact["kind"] == EMAIL else None
    if login_key is not None and await conn.fetchval(
        "select 1 from contacts where login_key = $1", login_key
    ):
        return None
    if contact["make_primary"] and contact["kind"] == EMAIL:
        await conn.execute(
            "update contacts set is_primary = false where account_id = $1 and kind = $2",
            contact["account_id"],
            EMAIL,
        )
    return await conn.fetchrow(
        "update contacts set verified = true, verified_at = now(), code_hash = null,"
        " is_primary = make_primary and kind = $3, make_primary = false, login_key = $2"
        " where id = $1 returning *",
        contact["id"],
        login_key,
        EMAIL,
    )


async def remove_contact(conn: asyncpg.Connection, contact_id: uuid.UUID) -> None:
    await conn.execute(
        "update contacts set removed_at = now(), login_key = null, is_primary = false"
        " where id = $1",
        contact_id,
    )


async def restore_contacts_removed_after(
    conn: asyncpg.Connection, *, account_id: uuid.UUID, changed_contact_id: uuid.UUID
) -> None:
    """Bring back the verified contacts removed since ``changed_contact_id`` was verified.

    Freezing a contact change undoes what followed it too: an intruder who moved the
    account to their address and then dropped the owner's must not leave it with none.
    An address another account has taken since stays with that account.
    """
    await conn.execute(
        "update contacts c set removed_at = null,"
        " login_key = case when c.kind = $3 then c.address_key end"
        " from contacts changed where changed.id = $2 and c.account_id = $1 and c.id <> $2"
        " and c.verified and c.removed_at >= changed.verified_at"
        " and not (c.kind = $3 and exists ("
        "  select 1 from contacts other where other.login_key = c.address_key))",
        account_id,
        changed_contact_id,
        EMAIL,
    )


async def restore_earliest_primary_email(conn: asyncpg.Connection, account_id: uuid.UUID) -> None:
    """Make the longest-verified remaining email primary (for an account left without one)."""
    await conn.execute(
        "update contacts set is_primary = true where id = ("
        " select id from contacts where account_id = $1 and kind = $2"
        " and verified and removed_at is null order by verified_at limit 1)",
        account_id,
        EMAIL,
    )


async def create_freeze(
    conn: asyncpg.Connection,
    *,
    token_hash: bytes,
    account_id: uuid.UUID,
    contact_id: uuid.UUID,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "insert into contact_freezes (token_hash, account_id, contact_id, expires_at)"
        " values ($1, $2, $3, $4)",
        token_hash,
        account_id,
        contact_id,
        expires_at,
    )


async def use_freeze(conn: asyncpg.Connection, token_hash: bytes) -> Record | None:
    return await conn.fetchrow(
        "update contact_freezes set used_at = now() where token_hash = $1 and used_at is null"
        " and expires_at > now() returning account_id, contact_id",
        token_hash,
    )
