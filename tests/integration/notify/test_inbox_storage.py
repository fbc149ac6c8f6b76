"""The in-app inbox on real PostgreSQL: sent inbox deliveries of one account, newest first."""

from __future__ import annotations

import uuid

from services.notify.domain.kinds import NoticeKind
from services.notify.storage.inbox import InboxStore
from tests.integration.notify.conftest import accept


async def deliver_inbox(pool, notice_id: uuid.UUID, subject: str) -> None:
    await pool.execute(
        "update deliveries set status = 'sent', subject = $2, body = 'b'"
        " where notice_id = $1 and channel = 4",
        notice_id,
        subject,
    )


async def test_the_inbox_lists_only_sent_inbox_items_of_the_account(pool) -> None:
    account, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    first = await accept(pool, account, NoticeKind.PASSWORD_CHANGED)
    second = await accept(pool, account, NoticeKind.FACTOR_CHANGED)
    await accept(pool, account, NoticeKind.NEW_DEVICE_SIGN_IN)  # not delivered yet
    theirs = await accept(pool, stranger, NoticeKind.PASSWORD_CHANGED)
    for notice, subject in ((first, "one"), (second, "two"), (theirs, "theirs")):
        await deliver_inbox(pool, notice.notice_id, subject)

    items = await InboxStore(pool).items(
        uuid.UUID(account), unread_only=False, before_seq=None, limit=10
    )

    assert [item.subject for item in items] == ["two", "one"]
    older = await InboxStore(pool).items(
        uuid.UUID(account), unread_only=False, before_seq=items[0].seq, limit=10
    )
    assert [item.subject for item in older] == ["one"]


async def test_marking_read_counts_only_unread_items_of_the_account(pool) -> None:
    account, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    mine = await accept(pool, account, NoticeKind.PASSWORD_CHANGED)
    theirs = await accept(pool, stranger, NoticeKind.PASSWORD_CHANGED)
    await deliver_inbox(pool, mine.notice_id, "mine")
    await deliver_inbox(pool, theirs.notice_id, "theirs")
    inbox = InboxStore(pool)

    ids = [mine.notice_id, theirs.notice_id]
    assert await inbox.mark_read(uuid.UUID(account), ids) == 1
    assert await inbox.mark_read(uuid.UUID(account), ids) == 0
    unread = await inbox.items(uuid.UUID(account), unread_only=True, before_seq=None, limit=5)
    assert unread == []
    (theirs_item,) = await inbox.items(
        uuid.UUID(stranger), unread_only=True, before_seq=None, limit=5
    )
    assert theirs_item.read_at is None
