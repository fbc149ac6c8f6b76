"""A person's preferences: the notice kinds they muted."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from services.notify.domain.kinds import NoticeKind


class PreferenceStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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
