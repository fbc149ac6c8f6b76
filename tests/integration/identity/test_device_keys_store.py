"""Identity's device registry and spent-proof memory against real PostgreSQL."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest

from services.identity.bootstrap import MIGRATIONS
from services.identity.storage import device_proofs as proof_store
from services.identity.storage import devices as device_store
from services.runtime.db import close_pool, create_pool
from services.runtime.device_proof import DeviceKey, verify_proof
from services.runtime.migrations import migrate

pytestmark = pytest.mark.asyncio


async def test_devices_known_only_by_a_string_before_keys_keep_none_of_a_known_devices_trust(
    new_database, tmp_path: Path
) -> None:
    before_keys = tmp_path / "migrations"
    before_keys.mkdir()
    shutil.copy(MIGRATIONS / "0001_identity.sql", before_keys)
    pool = await create_pool(await new_database("identity"), max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "identity", before_keys)
        account_id, session_id = uuid.uuid4(), uuid.uuid4()
        await pool.execute(
            "insert into accounts (id, status, payer_id, registration_device_id)"
            " values ($1, 'active', $2, 'phone-1')",
            account_id,
            uuid.uuid4(),
        )
        await pool.execute(
            "insert into devices (account_id, device_id) values ($1, 'phone-1')", account_id
        )
        await pool.execute(
            "insert into sessions (id, account_id, device_id, methods, assurance_level,"
            " auth_time, expires_at) values ($1, $2, 'phone-1', '{password}', 1, now(),"
            " now() + interval '1 day')",
            session_id,
            account_id,
        )

        async with pool.acquire() as conn:
            applied = await migrate(conn, "identity", MIGRATIONS)
        assert "identity/0005_device_keys.sql" in applied

        assert (
            await pool.fetchval(
                "select registration_device_id from accounts where id = $1", account_id
            )
            is None
        )
        assert await device_store.devices(pool, account_id) == []
        # The session lives on as one of a device that proved nothing.
        assert await pool.fetchval("select device_id from sessions where id = $1", session_id) == (
            "unproven:phone-1"
        )
    finally:
        await close_pool(pool)


async def test_a_spent_proof_is_refused_until_it_expires_and_then_forgotten(new_database) -> None:
    pool = await create_pool(await new_database("identity"), max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "identity", MIGRATIONS)
        device = DeviceKey()
        proven = verify_proof(device.proof("Login", "x"), rpc="Login", bound="x")
        assert proven is not None
        assert await proof_store.spend_device_proof(pool, proven)
        assert not await proof_store.spend_device_proof(pool, proven)

        old = verify_proof(
            device.proof("Login", "x", issued_at=time.time() - 30),
            rpc="Login",
            bound="x",
            max_age_seconds=31,
            max_future_seconds=0,
        )
        assert old is not None
        await proof_store.spend_device_proof(pool, old)
        await pool.execute(
            "update device_proofs set expires_at = now() - interval '1 second' where jti = $1",
            old.jti,
        )
        assert await proof_store.purge_device_proofs(pool) == 1
        remaining = await pool.fetch("select jti from device_proofs")
        assert [row["jti"] for row in remaining] == [proven.jti]
    finally:
        await close_pool(pool)
