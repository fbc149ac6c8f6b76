"""The in-app inbox: sent inbox deliveries of an account, and marking them read."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from services.notify.domain.kinds import Channel, NoticeKind
from services.notify.domain.notices import InboxRecord


class InboxStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def items(
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
