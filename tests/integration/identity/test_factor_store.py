"""Factors on a real PostgreSQL, read back as typed rows: a TOTP app counts once confirmed,
a passkey is found by its credential, a suspended one is no longer usable."""

from __future__ import annotations

import uuid

import asyncpg

from services.identity.storage import factors as factor_store
from services.identity.storage import passkeys as passkey_store
from services.identity.storage import totp as totp_store


async def an_account(pool: asyncpg.Pool) -> uuid.UUID:
    account_id = uuid.uuid4()
    await pool.execute(
        "insert into accounts (id, status, payer_id, password_hash) values ($1, 'active', $2, 'x')",
        account_id,
        uuid.uuid4(),
    )
    return account_id


async def test_a_totp_enrolment_is_a_factor_only_once_confirmed(pool: asyncpg.Pool):
    account_id = await an_account(pool)
    async with pool.acquire() as conn, conn.transaction():
        factor_id = await totp_store.create_pending_totp(conn, account_id, b"sealed")
        assert await factor_store.factors(conn, account_id) == []
        pending = await totp_store.pending_totp(conn, factor_id, account_id)
        assert pending is not None and pending.sealed_totp_secret == b"sealed"
        assert pending.confirmed_at is None

        confirmed = await totp_store.confirm_factor(conn, factor_id, step=42)

    assert confirmed.kind == "totp" and confirmed.last_totp_step == 42
    async with pool.acquire() as conn:
        assert [f.factor_id for f in await factor_store.factors(conn, account_id)] == [factor_id]
        # A replayed step is refused; a later one is taken.
        assert not await totp_store.accept_totp_step(conn, factor_id, 42)
        assert await totp_store.accept_totp_step(conn, factor_id, 43)


async def test_a_passkey_is_found_by_its_credential_until_suspended_it_stays_usable(
    pool: asyncpg.Pool,
):
    account_id = await an_account(pool)
    async with pool.acquire() as conn, conn.transaction():
        added = await passkey_store.add_passkey(
            conn,
            account_id=account_id,
            name="phone",
            credential_id=b"cred-1",
            public_key=b"key",
            sign_count=3,
        )
        found = await passkey_store.passkey_by_credential(conn, b"cred-1")
        assert found == added
        assert found is not None and found.usable_passkey and found.sign_count == 3
        assert await passkey_store.passkey_by_credential(conn, b"cred-2") is None

        await factor_store.suspend_factor(conn, added.factor_id)
        suspended = await factor_store.factor(conn, added.factor_id)

    assert suspended is not None and suspended.suspended and not suspended.usable_passkey
