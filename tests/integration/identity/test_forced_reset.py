"""ForceCredentialReset's set-based batches against a real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

import asyncpg

from services.identity.bootstrap import MIGRATIONS
from services.identity.storage import resets as reset_store
from services.runtime.migrations import migrate

LIFETIME = timedelta(minutes=11)


async def seeded(url: str, accounts: int) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    await migrate(conn, "identity", MIGRATIONS)
    await conn.execute(
        "insert into accounts (id, status, payer_id, password_hash)"
        " select gen_random_uuid(), 'active', gen_random_uuid(), 'x'"
        " from generate_series(1, $1)",
        accounts,
    )
    await conn.execute(
        "insert into sessions (id, account_id, device_id, methods, assurance_level, auth_time,"
        " expires_at) select gen_random_uuid(), id, 'd', '{password}', 1, now(),"
        " now() + interval '1 day' from accounts"
    )
    return conn


async def run_all(conn: asyncpg.Connection, job, batch: int):
    while job["finished_at"] is None:
        async with conn.transaction():
            job = await reset_store.run_reset_batch(
                conn,
                job,
                batch_size=batch,
                token_lifetime=LIFETIME,
                link_lifetime=timedelta(minutes=30),
                notify_channel="mamoru_outbox",
            )
    return job


async def test_a_forced_reset_of_every_account_expires_revokes_and_queues_one_notice_each(
    new_database,
):
    conn = await seeded(await new_database("identity"), 2500)
    try:
        job = await reset_store.create_reset_job(
            conn, reason="breach", all_accounts=True, account_ids=[], created_by="operator"
        )
        assert job["total"] == 2500
        job = await run_all(conn, job, 1000)
        assert job["processed"] == 2500
        counts = await conn.fetchrow(
            "select (select count(*) from accounts where password_expired) as expired,"
            " (select count(*) from sessions where revoked_at is null) as live,"
            " (select count(*) from revocations) as revocations,"
            " (select count(*) from outbox where payload->>'kind' = 'NOTICE_KIND_FORCED_RESET')"
            "   as notices,"
            " (select count(distinct account_id) from password_resets) as links"
        )
        assert dict(counts) == {
            "expired": 2500, "live": 0, "revocations": 2500, "notices": 2500, "links": 2500,
        }  # fmt: skip
        # The link in the notice is the one stored (as its hash) for that account.
        notice = json.loads(await conn.fetchval("select payload::text from outbox limit 1"))
        secret = notice["code"]["secret"]
        stored = await conn.fetchval(
            "select account_id from password_resets where token_hash = $1",
            hashlib.sha256(secret.encode()).digest(),
        )
        assert str(stored) == notice["account_id"]
    finally:
        await conn.close()


async def test_a_listed_reset_touches_only_the_listed_accounts_and_resumes_where_it_stopped(
    new_database,
):
    conn = await seeded(await new_database("identity"), 50)
    try:
        chosen = [row["id"] for row in await conn.fetch("select id from accounts limit 7")]
        job = await reset_store.create_reset_job(
            conn, reason="leak", all_accounts=False, account_ids=chosen, created_by="operator"
        )
        async with conn.transaction():
            job = await reset_store.run_reset_batch(
                conn, job, batch_size=3, token_lifetime=LIFETIME,
                link_lifetime=timedelta(minutes=30), notify_channel="mamoru_outbox",
            )  # fmt: skip
        assert (job["processed"], job["finished_at"]) == (3, None)
        # A crash here loses nothing: the next run starts from the stored cursor.
        resumed = await reset_store.reset_job(conn, job["id"])
        job = await run_all(conn, resumed, 3)
        assert (job["processed"], job["total"]) == (7, 7)
        expired = {
            row["id"] for row in await conn.fetch("select id from accounts where password_expired")
        }
        assert expired == set(chosen)
        assert await conn.fetchval("select count(*) from outbox") == 7
        assert uuid.UUID(str(job["id"]))
    finally:
        await conn.close()
