"""Notices: accepting one (with its deliveries) once per idempotency key. The accept
decision is the domain's ``decide``; this module gathers its facts and stores its answer."""

from __future__ import annotations

import uuid

import asyncpg

from services.notify.domain.notices import (
    Acceptance,
    AcceptedNotice,
    NewNotice,
    RateLimit,
    counts_recent,
    decide,
    may_be_muted,
)
from services.notify.storage.values import as_uuid


class NoticeStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def accept(self, notice: NewNotice, rate_limit: RateLimit) -> AcceptedNotice:
        """Store the notice and one delivery per planned channel, once per idempotency key.

        A notice whose decision needs no facts (neither rate-limited nor mutable, as
        every payment notice) is one statement; the others gather their facts first
        in one transaction.
        """
        if not counts_recent(notice) and not may_be_muted(notice):
            decision = decide(notice, recent=0, muted=False, rate_limit=rate_limit)
            inserted = await _insert(self._pool, notice, decision)
            if inserted is not None:
                return inserted
            earlier = await _earlier(self._pool, notice)
            assert earlier is not None, "a conflicting notice is never deleted"
            return earlier
        async with self._pool.acquire() as conn, conn.transaction():
            earlier = await _earlier(conn, notice)
            if earlier is not None:
                return earlier
            recipient = notice.recipient
            assert recipient is not None, "only a recipient's notices need facts"
            account_id = as_uuid(recipient.account_id)
            recent = 0
            if counts_recent(notice):
                # Serialises concurrent notices of one kind to one recipient, so
                # a parallel flood cannot all see "under the limit".
                await conn.execute(
                    "select pg_advisory_xact_lock(hashtextextended($1, 0))",
                    f"notify-rate:{recipient.key}:{int(notice.kind)}",
                )
                recent = await conn.fetchval(
                    """
                    select count(*) from notices
                    where kind = $1 and not coalesced
                      and created_at > now() - make_interval(secs => $2)
                      and (account_id = $3 or payer_id = $4)
                    """,
                    int(notice.kind),
                    rate_limit.window_seconds,
                    account_id,
                    as_uuid(recipient.payer_id),
                )
            muted = False
            if may_be_muted(notice):
                muted = bool(
                    await conn.fetchval(
                        "select $2 = any(muted_kinds) from preferences where account_id = $1",
                        account_id,
                        int(notice.kind),
                    )
                )
            decision = decide(notice, recent=recent, muted=muted, rate_limit=rate_limit)
            inserted = await _insert(conn, notice, decision)
            if inserted is None:
                # The same key arrived concurrently and committed first.
                again = await _earlier(conn, notice)
                assert again is not None
                return again
            return inserted


async def _insert(
    conn: asyncpg.Connection | asyncpg.Pool, notice: NewNotice, decision: Acceptance
) -> AcceptedNotice | None:
    """The notice and its deliveries in one statement; None when its key was taken."""
    recipient = notice.recipient
    notice_id = uuid.uuid4()
    inserted = await conn.fetchval(
        """
        with notice as (
            insert into notices
                (id, kind, caller, idempotency_key, account_id, payer_id, params, coalesced)
            values ($1, $2, $3, $4, $5, $6, $7, $8)
            on conflict (caller, idempotency_key) do nothing
            returning id
        ), planned as (
            insert into deliveries (id, notice_id, kind, channel, status, account_id)
            select d.id, notice.id, $2, d.channel, $11, $5
            from notice, unnest($9::uuid[], $10::smallint[]) as d(id, channel)
        )
        select id from notice
        """,
        notice_id,
        int(notice.kind),
        notice.caller,
        notice.idempotency_key,
        as_uuid(recipient.account_id if recipient else None),
        as_uuid(recipient.payer_id if recipient else None),
        notice.params,
        decision.coalesced,
        [uuid.uuid4() for _ in decision.channels],
        [int(channel) for channel in decision.channels],
        decision.status.stored,
    )
    if inserted is None:
        return None
    return AcceptedNotice(notice_id=notice_id, coalesced=decision.coalesced)


async def _earlier(
    conn: asyncpg.Connection | asyncpg.Pool, notice: NewNotice
) -> AcceptedNotice | None:
    row = await conn.fetchrow(
        "select id, coalesced from notices where caller = $1 and idempotency_key = $2",
        notice.caller,
        notice.idempotency_key,
    )
    if row is None:
        return None
    return AcceptedNotice(notice_id=row["id"], coalesced=row["coalesced"])
