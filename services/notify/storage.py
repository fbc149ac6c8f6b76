"""All of notify's SQL: notices, deliveries and their claims, inbox, preferences."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.notify.domain.kinds import (
    COALESCED_KINDS,
    MUTABLE_KINDS,
    Channel,
    DeliveryStatus,
    NoticeKind,
    planned_channels,
)
from services.notify.domain.routing import Recipient

_ERROR_TEXT_LIMIT = 1000


@dataclass(frozen=True)
class NewNotice:
    """A notice as accepted from a caller."""

    kind: NoticeKind
    caller: str
    idempotency_key: str
    recipient: Recipient | None
    params: dict[str, Any]


@dataclass(frozen=True)
class AcceptedNotice:
    notice_id: uuid.UUID
    coalesced: bool


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` notices of a coalesced kind per recipient per window."""

    limit: int
    window_seconds: float


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a worker holds for one attempt, with its notice."""

    delivery_id: uuid.UUID
    lease_token: uuid.UUID
    notice_id: uuid.UUID
    kind: NoticeKind
    channel: Channel
    attempts: int
    recipient: Recipient | None
    params: dict[str, Any]


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery as the delivery log shows it."""

    seq: int
    delivery_id: uuid.UUID
    notice_id: uuid.UUID
    kind: NoticeKind
    channel: Channel
    address: str
    status: DeliveryStatus
    attempts: int
    provider: str
    last_error: str
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class InboxRecord:
    seq: int
    notice_id: uuid.UUID
    kind: NoticeKind
    subject: str
    body: str
    created_at: datetime
    read_at: datetime | None


@dataclass(frozen=True)
class DeliveryStatRow:
    kind: NoticeKind
    channel: Channel
    sent: int
    failed: int
    dead: int
    coalesced: int


class NoticeStore:
    """notify's database, through one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def accept(self, notice: NewNotice, rate_limit: RateLimit) -> AcceptedNotice:
        """Store the notice and one delivery per planned channel, once per idempotency key."""
        async with self._pool.acquire() as conn, conn.transaction():
            earlier = await self._earlier(conn, notice)
            if earlier is not None:
                return earlier
            recipient = notice.recipient
            coalesced = False
            if recipient is not None and notice.kind in COALESCED_KINDS:
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
                    _uuid(recipient.account_id),
                    _uuid(recipient.payer_id),
                )
                coalesced = recent >= rate_limit.limit
            muted = False
            if recipient is not None and recipient.account_id and notice.kind in MUTABLE_KINDS:
                muted = bool(
                    await conn.fetchval(
                        "select $2 = any(muted_kinds) from preferences where account_id = $1",
                        _uuid(recipient.account_id),
                        int(notice.kind),
                    )
                )
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
                _uuid(recipient.account_id if recipient else None),
                _uuid(recipient.payer_id if recipient else None),
                notice.params,
                coalesced,
            )
            if inserted is None:
                # The same key arrived concurrently and committed first.
                again = await self._earlier(conn, notice)
                assert again is not None
                return again
            status = DeliveryStatus.PENDING
            if coalesced:
                status = DeliveryStatus.COALESCED
            elif muted:
                status = DeliveryStatus.MUTED
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
                        status.stored,
                        _uuid(recipient.account_id if recipient else None),
                    )
                    for channel in planned_channels(notice.kind)
                ],
            )
            return AcceptedNotice(notice_id=notice_id, coalesced=coalesced)

    async def _earlier(self, conn: asyncpg.Connection, notice: NewNotice) -> AcceptedNotice | None:
        row = await conn.fetchrow(
            "select id, coalesced from notices where caller = $1 and idempotency_key = $2",
            notice.caller,
            notice.idempotency_key,
        )
        if row is None:
            return None
        return AcceptedNotice(notice_id=row["id"], coalesced=row["coalesced"])

    async def oldest_due_age_seconds(self) -> float:
        """How long the oldest unsent delivery (pending or awaiting a retry) has waited."""
        value = await self._pool.fetchval(
            "select coalesce(extract(epoch from now() - min(created_at)), 0)::float8"
            " from deliveries where status in ('pending', 'failed')"
        )
        return max(float(value), 0.0)

    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[ClaimedDelivery]:
        """Take up to ``limit`` due deliveries for one attempt each, leased to this worker."""
        token = uuid.uuid4()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                with due as (
                    select id from deliveries
                    where status in ('pending', 'failed') and available_at <= now()
                    order by available_at, seq
                    limit $1
                    for update skip locked
                )
                update deliveries d
                set attempts = d.attempts + 1,
                    available_at = now() + make_interval(secs => $2),
                    lease_token = $3
                from due, notices n
                where d.id = due.id and n.id = d.notice_id
                returning d.id, d.notice_id, d.kind, d.channel, d.attempts,
                          n.account_id, n.payer_id, n.params
                """,
                limit,
                lease_seconds,
                token,
            )
        return [
            ClaimedDelivery(
                delivery_id=row["id"],
                lease_token=token,
                notice_id=row["notice_id"],
                kind=NoticeKind(row["kind"]),
                channel=Channel(row["channel"]),
                attempts=row["attempts"],
                recipient=_recipient(row["account_id"], row["payer_id"]),
                params=row["params"],
            )
            for row in rows
        ]

    async def record_sent(
        self,
        claimed: ClaimedDelivery,
        *,
        channel: Channel,
        account_id: str | None,
        addresses: Sequence[str],
        provider: str,
        subject: str = "",
        body: str = "",
    ) -> None:
        # Any holder may record success: a late success is still a success.
        await self._pool.execute(
            """
            update deliveries
            set status = 'sent', channel = $2, account_id = coalesce($3, account_id),
                address = $4, provider = $5, subject = $6, body = $7,
                sent_at = now(), lease_token = null, last_error = ''
            where id = $1 and status in ('pending', 'failed')
            """,
            claimed.delivery_id,
            int(channel),
            _uuid(account_id),
            ", ".join(addresses),
            provider,
            subject,
            body,
        )

    async def record_no_address(
        self, claimed: ClaimedDelivery, *, channel: Channel, account_id: str | None, why: str
    ) -> None:
        await self._pool.execute(
            """
            update deliveries
            set status = 'no_address', channel = $3, account_id = coalesce($4, account_id),
                last_error = $5, lease_token = null
            where id = $1 and lease_token = $2 and status in ('pending', 'failed')
            """,
            claimed.delivery_id,
            claimed.lease_token,
            int(channel),
            _uuid(account_id),
            why[:_ERROR_TEXT_LIMIT],
        )

    async def record_failure(
        self, claimed: ClaimedDelivery, *, error: str, dead: bool, retry_in_seconds: float
    ) -> None:
        # Only the lease holder records a failure, so a worker whose lease ran
        # out cannot reschedule a delivery another worker now holds.
        await self._pool.execute(
            """
            update deliveries
            set status = case when $3 then 'dead' else 'failed' end,
                available_at = now() + make_interval(secs => $4),
                last_error = $5, lease_token = null
            where id = $1 and lease_token = $2 and status in ('pending', 'failed')
            """,
            claimed.delivery_id,
            claimed.lease_token,
            dead,
            0.0 if dead else retry_in_seconds,
            error[:_ERROR_TEXT_LIMIT],
        )

    async def forget_secret(self, notice_id: uuid.UUID) -> None:
        """A code or link token is kept only until it has been handed to its channel."""
        await self._pool.execute(
            "update notices set params = params - 'secret' where id = $1 and params ? 'secret'",
            notice_id,
        )

    async def seconds_until_next_due(self) -> float | None:
        wait = await self._pool.fetchval(
            "select extract(epoch from min(available_at) - now())::float8"
            " from deliveries where status in ('pending', 'failed')"
        )
        return None if wait is None else float(wait)

    async def deliveries_of_account(
        self, account_id: uuid.UUID, *, before_seq: int | None, limit: int
    ) -> list[DeliveryRecord]:
        rows = await self._pool.fetch(
            """
            select seq, id, notice_id, kind, channel, address, status, attempts, provider,
                   last_error, created_at, sent_at
            from deliveries
            where account_id = $1 and ($2::bigint is null or seq < $2)
            order by seq desc limit $3
            """,
            account_id,
            before_seq,
            limit,
        )
        return [_delivery(row) for row in rows]

    async def dead_letters(self, *, before_seq: int | None, limit: int) -> list[DeliveryRecord]:
        rows = await self._pool.fetch(
            """
            select seq, id, notice_id, kind, channel, address, status, attempts, provider,
                   last_error, created_at, sent_at
            from deliveries
            where status = 'dead' and ($1::bigint is null or seq < $1)
            order by seq desc limit $2
            """,
            before_seq,
            limit,
        )
        return [_delivery(row) for row in rows]

    async def delivery(self, delivery_id: uuid.UUID) -> DeliveryRecord | None:
        row = await self._pool.fetchrow(
            """
            select seq, id, notice_id, kind, channel, address, status, attempts, provider,
                   last_error, created_at, sent_at
            from deliveries where id = $1
            """,
            delivery_id,
        )
        return None if row is None else _delivery(row)

    async def retry_dead(self, delivery_id: uuid.UUID) -> DeliveryRecord | None:
        """Make a dead delivery pending again with fresh attempts; None when it is not dead."""
        row = await self._pool.fetchrow(
            """
            update deliveries
            set status = 'pending', attempts = 0, available_at = now(), lease_token = null
            where id = $1 and status = 'dead'
            returning seq, id, notice_id, kind, channel, address, status, attempts, provider,
                   last_error, created_at, sent_at
            """,
            delivery_id,
        )
        return None if row is None else _delivery(row)

    async def delivery_stats(self, since: datetime, until: datetime) -> list[DeliveryStatRow]:
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

    async def inbox(
        self, account_id: uuid.UUID, *, unread_only: bool, before_seq: int | None, limit: int
    ) -> list[InboxRecord]:
        rows = await self._pool.fetch(
            """
            select seq, notice_id, kind, subject, body, created_at, read_at from deliveries
            where account_id = $1 and channel = $2 and status = 'sent'
              and (not $3 or read_at is null) and ($4::bigint is null or seq < $4)
            order by seq desc limit $5
            """,
            account_id,
            int(Channel.INBOX),
            unread_only,
            before_seq,
            limit,
        )
        return [
            InboxRecord(
                seq=row["seq"],
                notice_id=row["notice_id"],
                kind=NoticeKind(row["kind"]),
                subject=row["subject"],
                body=row["body"],
                created_at=row["created_at"],
                read_at=row["read_at"],
            )
            for row in rows
        ]

    async def mark_read(self, account_id: uuid.UUID, notice_ids: Sequence[uuid.UUID]) -> int:
        result = await self._pool.execute(
            """
            update deliveries set read_at = now()
            where account_id = $1 and channel = $2 and status = 'sent'
              and notice_id = any($3::uuid[]) and read_at is null
            """,
            account_id,
            int(Channel.INBOX),
            list(notice_ids),
        )
        return int(result.split()[-1])

    async def muted_kinds(self, account_id: uuid.UUID) -> list[NoticeKind]:
        kinds = await self._pool.fetchval(
            "select muted_kinds from preferences where account_id = $1", account_id
        )
        return [NoticeKind(kind) for kind in kinds or []]

    async def set_muted_kinds(
        self, account_id: uuid.UUID, kinds: Sequence[NoticeKind]
    ) -> list[NoticeKind]:
        stored = await self._pool.fetchval(
            """
            insert into preferences (account_id, muted_kinds) values ($1, $2)
            on conflict (account_id)
                do update set muted_kinds = excluded.muted_kinds, updated_at = now()
            returning muted_kinds
            """,
            account_id,
            sorted({int(kind) for kind in kinds}),
        )
        return [NoticeKind(kind) for kind in stored]


def _delivery(row: Any) -> DeliveryRecord:
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


def _uuid(value: str | None) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(value)


def _recipient(account_id: uuid.UUID | None, payer_id: uuid.UUID | None) -> Recipient | None:
    if account_id is not None:
        return Recipient(account_id=str(account_id))
    if payer_id is not None:
        return Recipient(payer_id=str(payer_id))
    return None
