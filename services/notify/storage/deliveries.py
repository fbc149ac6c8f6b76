"""Deliveries: the leased queue the delivery job claims from, their outcomes, the
delivery log, dead letters and statistics."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.notify.domain.kinds import Channel, DeliveryStatus, NoticeKind
from services.notify.domain.notices import (
    ClaimedDelivery,
    DeliveryOutcome,
    DeliveryRecord,
    DeliveryStatRow,
)
from services.notify.storage.values import as_uuid, recipient
from services.runtime.queue import LeasedTable

_ERROR_TEXT_LIMIT = 1000
_RECORD = """seq, id, notice_id, kind, channel, address, status, attempts, provider,
              last_error, created_at, sent_at"""


def _claimed(row: asyncpg.Record, token: uuid.UUID) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=row["queue_key"],
        lease_token=token,
        notice_id=row["notice_id"],
        kind=NoticeKind(row["kind"]),
        channel=Channel(row["channel"]),
        attempts=row["queue_attempts"],
        recipient=recipient(row["account_id"], row["payer_id"]),
        params=row["params"],
    )


# The delivery job's queue: pending and failed deliveries wait; the job records
# each outcome itself (sent, no address), the queue records failures.
QUEUE = LeasedTable(
    name="deliveries",
    columns="q.notice_id, q.kind, q.channel, n.account_id, n.payer_id, n.params",
    read=_claimed,
    key_type="uuid",
    state="status",
    waiting=("pending", "failed"),
    retry="failed",
    tiebreak="seq",
    join="notices n",
    join_on="n.id = q.notice_id",
    holder="worker",
)


class DeliveryStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """Record a batch's outcomes, and drop the secrets handed on, in one statement.

        Any holder may record a success (a late success is still a success); "no
        address" only the holder of the lease it was decided under.
        """
        if not outcomes:
            return
        rows = [_outcome_row(outcome) for outcome in outcomes]
        columns = list(zip(*rows, strict=True))
        await self._pool.execute(
            """
            with outcome as (
                select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::smallint[],
                                     $5::uuid[], $6::text[], $7::text[], $8::text[],
                                     $9::text[], $10::text[])
                    as o(id, lease_token, status, channel, account_id, address, provider,
                         subject, body, why)
            ), forgotten as (
                update notices set params = params - 'secret'
                where id = any($11::uuid[]) and params ? 'secret'
            )
            update deliveries d
            set status = o.status, channel = o.channel,
                account_id = coalesce(o.account_id, d.account_id),
                address = o.address, provider = o.provider, subject = o.subject, body = o.body,
                sent_at = case when o.status = 'sent' then now() else d.sent_at end,
                last_error = o.why, lease_token = null
            from outcome o
            where d.id = o.id and d.status in ('pending', 'failed')
              and (o.status = 'sent' or d.lease_token = o.lease_token)
            """,
            *[list(column) for column in columns],
            [o.claimed.notice_id for o in outcomes if o.forget_secret],
        )

    async def oldest_due_age_seconds(self) -> float:
        """How long the oldest unsent delivery (pending or awaiting a retry) has waited."""
        value = await self._pool.fetchval(
            "select coalesce(extract(epoch from now() - min(created_at)), 0)::float8"
            " from deliveries where status in ('pending', 'failed')"
        )
        return max(float(value), 0.0)

    async def of_account(
        self, account_id: uuid.UUID, *, before_seq: int | None, limit: int
    ) -> list[DeliveryRecord]:
        rows = await self._pool.fetch(
            f"""
            select {_RECORD} from deliveries
            where account_id = $1 and ($2::bigint is null or seq < $2)
            order by seq desc limit $3
            """,  # noqa: S608 - a constant column list
            account_id,
            before_seq,
            limit,
        )
        return [_record(row) for row in rows]

    async def dead_letters(self, *, before_seq: int | None, limit: int) -> list[DeliveryRecord]:
        rows = await self._pool.fetch(
            f"""
            select {_RECORD} from deliveries
            where status = 'dead' and ($1::bigint is null or seq < $1)
            order by seq desc limit $2
            """,  # noqa: S608 - a constant column list
            before_seq,
            limit,
        )
        return [_record(row) for row in rows]

    async def get(self, delivery_id: uuid.UUID) -> DeliveryRecord | None:
        row = await self._pool.fetchrow(
            f"select {_RECORD} from deliveries where id = $1",  # noqa: S608 - constant columns
            delivery_id,
        )
        return None if row is None else _record(row)

    async def retry_dead(self, delivery_id: uuid.UUID) -> DeliveryRecord | None:
        """Make a dead delivery pending again with fresh attempts; None when it is not dead."""
        row = await self._pool.fetchrow(
            f"""
            update deliveries
            set status = 'pending', attempts = 0, available_at = now(), lease_token = null
            where id = $1 and status = 'dead'
            returning {_RECORD}
            """,  # noqa: S608 - a constant column list
            delivery_id,
        )
        return None if row is None else _record(row)

    async def stats(self, since: datetime, until: datetime) -> list[DeliveryStatRow]:
        rows = await self._pool.fetch(
            """
            select kind, channel,
                   count(*) filter (where status = 'sent') as sent,
                   count(*) filter (where status = 'failed') as failed,
                   count(*) filter (where status = 'dead') as dead,
                   count(*) filter (where status = 'coalesced') as coalesced
            from deliveries
            where created_at >= $1 and created_at < $2
            group by kind, channel
            order by kind, channel
            """,
            since,
            until,
        )
        return [
            DeliveryStatRow(
                kind=NoticeKind(row["kind"]),
                channel=Channel(row["channel"]),
                sent=row["sent"],
                failed=row["failed"],
                dead=row["dead"],
                coalesced=row["coalesced"],
            )
            for row in rows
        ]


def _outcome_row(outcome: DeliveryOutcome) -> tuple[Any, ...]:
    sent = outcome.sent
    return (
        outcome.claimed.delivery_id,
        outcome.claimed.lease_token,
        outcome.status.stored,
        int(outcome.channel),
        as_uuid(outcome.account_id),
        ", ".join(sent.addresses) if sent else "",
        sent.provider if sent else "",
        sent.subject if sent else "",
        sent.body if sent else "",
        "" if sent else outcome.why[:_ERROR_TEXT_LIMIT],
    )


def _record(row: Any) -> DeliveryRecord:
    return DeliveryRecord(
        seq=row["seq"],
        delivery_id=row["id"],
        notice_id=row["notice_id"],
        kind=NoticeKind(row["kind"]),
        channel=Channel(row["channel"]),
        address=row["address"],
        status=DeliveryStatus.from_stored(row["status"]),
        attempts=row["attempts"],
        provider=row["provider"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        sent_at=row["sent_at"],
    )
