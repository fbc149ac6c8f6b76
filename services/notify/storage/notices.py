"""Notices: accepting one (with its deliveries) once per idempotency key, and
forgetting a secret once it is sent. The accept decision is the domain's
``decide``; this module gathers its facts and stores its answer."""

from __future__ import annotations

import uuid

import asyncpg

from services.notify.domain.notices import (
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
        """Store the notice and one delivery per planned channel, once per idempotency key."""
        async with self._pool.acquire() as conn, conn.transaction():
            earlier = await _earlier(conn, notice)
            if earlier is not None:
                return earlier
            recipient = notice.recipient
            account_id = as_uuid(recipient.account_id if recipient else None)
            recent = 0
            if recipient is not None and counts_recent(notice):
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
            notice_id = uuid.uuid4()
            inserted = await conn.fetchval(
                """
                insert into notices
                    (id, kind, caller, idempotency_key, account_id, payer_id, params, coalesced)
                values ($1, $2, $3, $4, $5, $6, $7, $8)
                on conflict (caller, idempotency_key) do nothing
                returning id
                """,
                notice_id,
                int(notice.kind),
                notice.caller,
                notice.idempotency_key,
                account_id,
                as_uuid(recipient.payer_id if recipient else None),
                notice.params,
                decision.coalesced,
            )
            if inserted is None:
                # The same key arrived concurrently and committed first.
                again = await _earlier(conn, notice)
                assert again is not None
                return again
            await conn.executemany(
                """
                insert into deliveries (id, notice_id, kind, channel, status, account_id)
                values ($1, $2, $3, $4, $5, $6)
                """,
                [
                    (
                        uuid.uuid4(),
                        notice_id,
                        int(notice.kind),
                        int(channel),
                        decision.status.stored,
                        account_id,
                    )
                    for channel in decision.channels
                ],
            )
            return AcceptedNotice(notice_id=notice_id, coalesced=decision.coalesced)

    async def forget_secret(self, notice_id: uuid.UUID) -> None:
        """A code or link token is kept only until it has been handed to its channel."""
        await self._pool.execute(
            "update notices set params = params - 'secret' where id = $1 and params ? 'secret'",
            notice_id,
        )


async def _earlier(conn: asyncpg.Connection, notice: NewNotice) -> AcceptedNotice | None:
    row = await conn.fetchrow(
        "select id, coalesced from notices where caller = $1 and idempotency_key = $2",
        notice.caller,
        notice.idempotency_key,
    )
    if row is None:
        return None
    return AcceptedNotice(notice_id=row["id"], coalesced=row["coalesced"])
