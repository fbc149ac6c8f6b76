"""Preferences on real PostgreSQL: the muted kinds of a person."""

from __future__ import annotations

import uuid

from services.notify.domain.kinds import NoticeKind
from services.notify.storage.preferences import PreferenceStore


async def test_a_person_without_preferences_has_nothing_muted(pool) -> None:
    assert await PreferenceStore(pool).muted_kinds(uuid.uuid4()) == []


async def test_muted_kinds_are_replaced_as_a_whole_and_kept_once_each(pool) -> None:
    store, account = PreferenceStore(pool), uuid.uuid4()

    assert await store.set_muted_kinds(account, [NoticeKind.NEWS, NoticeKind.NEWS]) == [
        NoticeKind.NEWS
    ]
    assert await store.muted_kinds(account) == [NoticeKind.NEWS]
    assert await store.set_muted_kinds(account, []) == []
    assert await store.muted_kinds(account) == []
