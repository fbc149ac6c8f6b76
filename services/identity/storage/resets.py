"""Password reset links, and operators' forced credential resets.

SQL only; each function takes a connection and callers own the transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from services.identity.storage import Record
from services.identity.storage.contacts import CODE_SECRET
from services.identity.storage.revocations import REVOCATIONS_CHANNEL
from services.runtime.outbox import SCRUB_FIELD


async def create_reset(
    conn: asyncpg.Connection, *, account_id: uuid.UUID, token_hash: bytes, lifetime: timedelta
) -> datetime:
    # A new link replaces any earlier one still unused.
    await conn.execute(
        "update password_resets set used_at = now() where account_id = $1 and used_at is null",
        account_id,
    )
    expires_at: datetime = await conn.fetchval(
        "insert into password_resets (token_hash, account_id, expires_at)"
        " values ($1, $2, now() + $3) returning expires_at",
        token_hash,
        account_id,
        lifetime,
    )
    return expires_at


async def has_fresh_reset(
    conn: asyncpg.Connection, account_id: uuid.UUID, *, within: timedelta
) -> bool:
    """Whether an unused, unexpired reset link was made for the account within ``within``."""
    return bool(
        await conn.fetchval(
            "select exists (select 1 from password_resets where account_id = $1"
            " and used_at is null and expires_at > now() and created_at > now() - $2::interval)",
            account_id,
            within,
        )
    )


async def usable_reset(conn: asyncpg.Connection, token_hash: bytes) -> uuid.UUID | None:
    """The account an unused, unexpired reset link is for; the link stays unused."""
    account_id: uuid.UUID | None = await conn.fetchval(
        "select account_id from password_resets where token_hash = $1"
        " and used_at is null and expires_at > now()",
        token_hash,
    )
    return account_id


async def use_reset(conn: asyncpg.Connection, token_hash: bytes) -> uuid.UUID | None:
    account_id: uuid.UUID | None = await conn.fetchval(
        "update password_resets set used_at = now() where token_hash = $1 and used_at is null"
        " and expires_at > now() returning account_id",
        token_hash,
    )
    return account_id


_RESETTABLE = "status in ('active', 'locked')"


async def create_reset_job(
    conn: asyncpg.Connection,
    *,
    reason: str,
    all_accounts: bool,
    account_ids: Sequence[uuid.UUID],
    created_by: str,
) -> Record:
    total = await conn.fetchval(
        f"select count(*) from accounts where {_RESETTABLE}"  # noqa: S608 - a constant
        " and ($1 or id = any($2::uuid[]))",
        all_accounts,
        list(account_ids),
    )
    return await conn.fetchrow(
        "insert into reset_jobs (id, reason, all_accounts, account_ids, total, created_by)"
        " values ($1, $2, $3, $4, $5, $6) returning *",
        uuid.uuid4(),
        reason,
        all_accounts,
        list(account_ids),
        total,
        created_by,
    )


async def reset_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow("select * from reset_jobs where id = $1", job_id)


async def run_reset_batch(
    conn: asyncpg.Connection,
    job: Record,
    *,
    batch_size: int,
    token_lifetime: timedelta,
    link_lifetime: timedelta,
    notify_channel: str,
) -> Record:
    """Reset the next batch of a job in one statement; returns the job as it now stands.

    Everything a batch does (expire passwords, end sessions, announce revocations,
    store reset links, queue the notices, audit) commits together with the job's
    cursor, so a crash repeats at most the batch that was running. Reset links are
    made in SQL (two random UUIDs, 244 random bits) so that no row leaves the database.
    """
    row = await conn.fetchrow(
        f"""
        with batch as (
            select id from accounts
            where {_RESETTABLE}
              and ($2::uuid is null or id > $2)
              and ($3 or id = any($4::uuid[]))
              and created_at <= $10
            order by id
            limit $5
            for update
        ), expired as (
            update accounts set password_expired = true, recent_failures = 0
            from batch where accounts.id = batch.id
            returning accounts.id
        ), revoked as (
            update sessions set revoked_at = now(), revoke_reason = 'forced credential reset'
            where account_id in (select id from batch) and revoked_at is null
            returning id
        ), announced as (
            insert into revocations (session_id, expires_at)
            select id, now() + $6 from revoked
        ), challenges_closed as (
            -- What was begun with the expired password or in the revoked sessions
            -- ends with them (as end_begun_with_old_credentials does one by one).
            update challenges set completed_at = now()
            where account_id in (select id from batch) and completed_at is null
        ), ceremonies_closed as (
            update ceremonies set completed_at = now()
            where session_id in (select id from revoked) and completed_at is null
        ), enrolments_ended as (
            update factors set removed_at = now()
            where account_id in (select id from batch)
              and confirmed_at is null and removed_at is null
        ), contact_codes_ended as (
            update contacts set code_hash = null
            where account_id in (select id from batch) and not verified
              and removed_at is null and code_hash is not null
        ), old_links_used as (
            -- Sees the table as it was before this statement: the new links stay unused.
            update password_resets set used_at = now()
            where account_id in (select id from batch) and used_at is null
        ), links as materialized (
            select id as account_id,
                   replace(gen_random_uuid()::text, '-', '')
                   || replace(gen_random_uuid()::text, '-', '') as token
            from expired
        ), stored_links as (
            insert into password_resets (token_hash, account_id, expires_at)
            select sha256(convert_to(token, 'UTF8')), account_id, now() + $7 from links
        ), keyed as (
            select account_id, token,
                   'identity:forced-reset:' || $1::uuid::text || ':' || account_id as notice_key
            from links
        ), notices as (
            insert into outbox (topic, idempotency_key, payload)
            select 'notify.send_notice', notice_key,
                   jsonb_build_object(
                       'account_id', account_id::text,
                       'kind', 'NOTICE_KIND_FORCED_RESET',
                       'idempotency_key', notice_key,
                       'code', jsonb_build_object(
                           'secret', token,
                           'expires_at', to_char((now() + $7) at time zone 'UTC',
                                                 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                       $11::text, $12::text::jsonb)
            from keyed
            on conflict (idempotency_key) do nothing
        ), audited as (
            insert into security_events (id, account_id, kind, actor, details)
            select gen_random_uuid(), id, 'password.forced_reset', $8,
                   jsonb_build_object('job_id', $1::uuid::text, 'reason', $9::text)
            from expired
        )
        update reset_jobs set
            processed = processed + (select count(*) from expired),
            cursor_id = coalesce((select max(id::text)::uuid from expired), cursor_id),
            finished_at = case when (select count(*) from batch) < $5 then now() end
        where id = $1::uuid
        returning *
        """,  # noqa: S608 - the only interpolation is a constant
        job["id"],
        job["cursor_id"],
        job["all_accounts"],
        list(job["account_ids"]),
        batch_size,
        token_lifetime,
        link_lifetime,
        f"operator:{job['created_by']}",
        job["reason"],
        job["created_at"],
        # The link is blanked in the outbox once notify has it, as enqueue(scrub=...) does.
        SCRUB_FIELD,
        json.dumps([list(CODE_SECRET)]),
    )
    await conn.execute(f"notify {REVOCATIONS_CHANNEL}")
    await conn.execute("select pg_notify($1, '')", notify_channel)
    return row
