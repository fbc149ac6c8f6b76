"""Notices: accepting one (with its deliveries) once per idempotency key. The accept
decision is the domain's ``decide``; this module gathers its facts and stores its answer."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

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
from services.runtime.batching import each_at_most

# Notices of one batch that need facts of their own are stored at most this many at
# once (each may hold a connection while it waits on its recipient's rate-limit lock).
ACCEPTED_ALONE_AT_ONCE = 4


class NoticeStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def accept_many(
        self, notices: Sequence[NewNotice], rate_limit: RateLimit
    ) -> list[AcceptedNotice]:
        """Each notice accepted as ``accept`` would. Those whose decision needs no
        facts (every money notice) are stored together in one statement; the others
        each as ``accept`` stores them, four at a time."""
        answers: list[AcceptedNotice | None] = [None] * len(notices)
        plain = [i for i, n in enumerate(notices) if not counts_recent(n) and not may_be_muted(n)]
        stored = await _insert_many(
            self._pool,
            [
                (notices[i], decide(notices[i], recent=0, muted=False, rate_limit=rate_limit))
                for i in plain
            ],
        )
        for index, accepted in zip(plain, stored, strict=True):
            # A key stored before, or twice in this batch: the first notice answers.
            answers[index] = accepted or await _earlier(self._pool, notices[index])
        alone = set(range(len(notices))) - set(plain)
        others = sorted(alone)
        accepted_alone = await each_at_most(
            ACCEPTED_ALONE_AT_ONCE,
            [notices[i] for i in others],
            lambda n: self.accept(n, rate_limit),
        )
        for index, accepted in zip(others, accepted_alone, strict=True):
            answers[index] = accepted
        found = [answer for answer in answers if answer is not None]
        if len(found) != len(answers):
            raise RuntimeError("a notice whose key was taken has no earlier notice")
        return found

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


async def _insert_many(
    pool: asyncpg.Pool, planned: Sequence[tuple[NewNotice, Acceptance]]
) -> list[AcceptedNotice | None]:
    """Notices and their deliveries in one statement; None for each whose key was taken."""
    if not planned:
        return []
    ids = [uuid.uuid4() for _ in planned]
    deliveries: list[tuple[uuid.UUID, uuid.UUID, int, str]] = [
        (uuid.uuid4(), notice_id, int(channel), decision.status.stored)
        for notice_id, (_, decision) in zip(ids, planned, strict=True)
        for channel in decision.channels
    ]
    rows = await pool.fetch(
        """
        with notice as (
            insert into notices
                (id, kind, caller, idempotency_key, account_id, payer_id, params, coalesced)
            select n.id, n.kind, n.caller, n.idempotency_key, n.account_id, n.payer_id,
                   n.params::jsonb, n.coalesced
            from unnest($1::uuid[], $2::smallint[], $3::text[], $4::text[], $5::uuid[],
                        $6::uuid[], $7::text[], $8::boolean[])
                 as n(id, kind, caller, idempotency_key, account_id, payer_id, params, coalesced)
            on conflict (caller, idempotency_key) do nothing
            returning id, kind, account_id
        ), planned as (
            insert into deliveries (id, notice_id, kind, channel, status, account_id)
            select d.id, notice.id, notice.kind, d.channel, d.status, notice.account_id
            from notice
            join unnest($9::uuid[], $10::uuid[], $11::smallint[], $12::text[])
                 as d(id, notice_id, channel, status) on d.notice_id = notice.id
        )
        select id from notice
        """,
        ids,
        [int(notice.kind) for notice, _ in planned],
        [notice.caller for notice, _ in planned],
        [notice.idempotency_key for notice, _ in planned],
        [
            as_uuid(notice.recipient.account_id if notice.recipient else None)
            for notice, _ in planned
        ],
        [as_uuid(notice.recipient.payer_id if notice.recipient else None) for notice, _ in planned],
        [json.dumps(notice.params) for notice, _ in planned],
        [decision.coalesced for _, decision in planned],
        [d[0] for d in deliveries],
        [d[1] for d in deliveries],
        [d[2] for d in deliveries],
        [d[3] for d in deliveries],
    )
    inserted = {row["id"] for row in rows}
    return [
        AcceptedNotice(notice_id=notice_id, coalesced=decision.coalesced)
        if notice_id in inserted
        else None
        for notice_id, (_, decision) in zip(ids, planned, strict=True)
    ]


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
