"""Devices an account has signed in from.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.identity.domain.listings import Device
from services.identity.storage import Record
from services.runtime.device_proof import ProvenDevice


async def device(conn: asyncpg.Connection, account_id: uuid.UUID, device_id: str) -> Record | None:
    return await conn.fetchrow(
        "select * from devices where account_id = $1 and device_id = $2 and removed_at is null",
        account_id,
        device_id,
    )


async def remember_device(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    device: ProvenDevice,
    user_agent: str,
    ip: str,
    country: str,
) -> bool:
    """Register or refresh a device by its proven key; True when it was not registered before."""
    previous = await conn.fetchval(
        "select removed_at is null from devices where account_id = $1 and device_id = $2",
        account_id,
        device.thumbprint,
    )
    await conn.execute(
        "insert into devices (account_id, device_id, public_jwk, user_agent, last_ip,"
        " last_country) values ($1, $2, $3, $4, $5, $6)"
        " on conflict (account_id, device_id) do update set"
        " user_agent = excluded.user_agent, last_ip = excluded.last_ip,"
        " last_country = excluded.last_country, last_seen_at = now(), removed_at = null,"
        " public_jwk = excluded.public_jwk,"
        " first_seen_at = case when devices.removed_at is null then devices.first_seen_at"
        " else now() end",
        account_id,
        device.thumbprint,
        device.public_jwk,
        user_agent,
        ip,
        country,
    )
    return previous is not True


async def devices(conn: asyncpg.Connection, account_id: uuid.UUID) -> list[Device]:
    rows = await conn.fetch(
        "select device_id, user_agent, first_seen_at, last_seen_at, last_ip, last_country"
        " from devices where account_id = $1 and removed_at is null"
        " order by last_seen_at desc",
        account_id,
    )
    return [Device(**row) for row in rows]


async def remove_device(conn: asyncpg.Connection, account_id: uuid.UUID, device_id: str) -> bool:
    """Remove a device; when it is the one the account was registered on, its privileges
    go with it for good: the same key signing in again is just another device."""
    done = await conn.fetchval(
        "with removed as (update devices set removed_at = now()"
        " where account_id = $1 and device_id = $2 and removed_at is null returning device_id),"
        " unregistered as (update accounts set registration_device_id = null"
        " where id = $1 and registration_device_id in (select device_id from removed))"
        " select exists (select 1 from removed)",
        account_id,
        device_id,
    )
    return bool(done)
