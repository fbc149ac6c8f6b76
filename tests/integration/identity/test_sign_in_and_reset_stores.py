"""Storage modules behind sign-in's pre-answer work, reset links and signing keys, on a real
PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import asyncpg

from services.identity.domain.login import FailedSignIn
from services.identity.storage import keys as key_store
from services.identity.storage import resets as reset_store
from services.identity.storage.sign_in import PgSignInStore


async def an_account(pool: asyncpg.Pool, email: str) -> uuid.UUID:
    account_id = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "insert into accounts (id, status, payer_id, password_hash)"
            " values ($1, 'active', $2, 'x')",
            account_id,
            uuid.uuid4(),
        )
        await conn.execute(
            "insert into contacts (id, account_id, kind, address, address_key, verified,"
            " is_primary, login_key, verified_at) values ($1, $2, 1, $3, $3, true, true, $3,"
            " now())",
            uuid.uuid4(),
            account_id,
            email,
        )
    return account_id


async def test_a_sign_in_candidate_is_found_by_its_login_key_and_none_for_an_unknown_one(
    pool: asyncpg.Pool,
):
    account_id = await an_account(pool, "hanako@example.jp")
    store = PgSignInStore(pool)

    found = await store.login_candidate("hanako@example.jp", None)
    assert found is not None and found["id"] == account_id
    assert not found["proof_fresh"] and not found["known_device"]
    assert await store.login_candidate("nobody@example.jp", None) is None


async def test_a_queued_failed_sign_in_is_stored_in_the_outbox_for_identity_itself(
    pool: asyncpg.Pool,
):
    account_id = uuid.uuid4()
    store = PgSignInStore(pool)
    failure = FailedSignIn(account_id, "192.0.2.7", "laptop", "ua", expired_password=False)

    await store.queue_failed_sign_in(failure)
    await store.queue_failed_sign_in(failure)

    rows = await pool.fetch("select topic, payload::text as payload, state from outbox")
    assert [(row["topic"], row["state"]) for row in rows] == [
        ("identity.sign_in_failed", "pending"),
        ("identity.sign_in_failed", "pending"),
    ]
    assert FailedSignIn.from_payload(json.loads(rows[0]["payload"])) == failure


async def test_a_reset_link_names_its_account_until_it_is_used(pool: asyncpg.Pool):
    account_id = await an_account(pool, "hanako@example.jp")
    async with pool.acquire() as conn, conn.transaction():
        await reset_store.create_reset(
            conn, account_id=account_id, token_hash=b"link", lifetime=timedelta(minutes=30)
        )
    async with pool.acquire() as conn:
        assert await reset_store.usable_reset(conn, b"link") == account_id
        # Looking does not use it up.
        assert await reset_store.usable_reset(conn, b"link") == account_id
        assert await reset_store.usable_reset(conn, b"other") is None
        assert await reset_store.use_reset(conn, b"link") == account_id
        assert await reset_store.usable_reset(conn, b"link") is None


async def test_an_expired_reset_link_names_no_account(pool: asyncpg.Pool):
    account_id = await an_account(pool, "hanako@example.jp")
    async with pool.acquire() as conn, conn.transaction():
        await reset_store.create_reset(
            conn, account_id=account_id, token_hash=b"link", lifetime=timedelta(seconds=-1)
        )
        assert await reset_store.usable_reset(conn, b"link") is None


async def test_promoting_the_next_signing_key_keeps_one_current_one_previous_one_next(
    pool: asyncpg.Pool,
):
    async with pool.acquire() as conn, conn.transaction():
        await key_store.lock_ring(conn)
        assert await key_store.current_key(conn) is None
        assert await key_store.next_kid(conn) is None
        await key_store.insert_key(conn, kid="k1", state="current", sealed=b"1")
        await key_store.insert_key(conn, kid="k2", state="next", sealed=b"2")
        current = await key_store.current_key(conn)
        assert current is not None and current["kid"] == "k1"
        assert current["activated_at"] is not None

        await key_store.promote_next(conn, "k2")
        await key_store.insert_key(conn, kid="k3", state="next", sealed=b"3")
        await key_store.promote_next(conn, "k3")

    states = {row["kid"]: row["state"] for row in await key_store.published_keys(pool)}
    assert states == {"k3": "current", "k2": "previous"}
    assert await pool.fetchval("select state from signing_keys where kid = 'k1'") == "retired"
