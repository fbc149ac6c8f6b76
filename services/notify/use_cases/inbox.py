"""A person's own view: ListInbox, MarkRead, GetPreferences, UpdatePreferences."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.notify.domain.kinds import NoticeKind
from services.notify.domain.notices import InboxRecord
from services.notify.use_cases.ports import Inbox, Preferences


class PersonalView:
    def __init__(self, inbox: Inbox, preferences: Preferences) -> None:
        self._inbox = inbox
        self._preferences = preferences

    async def inbox(
        self, account_id: uuid.UUID, *, unread_only: bool, before_seq: int | None, limit: int
    ) -> list[InboxRecord]:
        return await self._inbox.items(
            account_id, unread_only=unread_only, before_seq=before_seq, limit=limit
        )

    async def mark_read(self, account_id: uuid.UUID, notice_ids: Sequence[uuid.UUID]) -> int:
        return await self._inbox.mark_read(account_id, notice_ids)

    async def muted_kinds(self, account_id: uuid.UUID) -> list[NoticeKind]:
        return await self._preferences.muted_kinds(account_id)

    async def mute(self, account_id: uuid.UUID, kinds: Sequence[NoticeKind]) -> list[NoticeKind]:
        return await self._preferences.set_muted_kinds(account_id, kinds)
