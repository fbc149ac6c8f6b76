"""Accepting notices on real PostgreSQL: once per key, rate limits and mutes as the
domain's accept rule decides, secrets forgotten on request."""

from __future__ import annotations

import asyncio
import uuid

from services.notify.domain.kinds import Channel, DeliveryStatus, NoticeKind
from services.notify.domain.notices import NewNotice
from services.notify.domain.routing import Recipient
from services.notify.storage.notices import NoticeStore
from services.notify.storage.preferences import PreferenceStore
from tests.integration.notify.conftest import LIMIT, accept


async def statuses(pool, notice_id: uuid.UUID) -> dict[Channel, str]:
    rows = await pool.fetch(
        "select channel, status from deliveries where notice_id = $1", notice_id
    )
    return {Channel(row["channel"]): row["status"] for row in rows}


async def test_a_key_is_accepted_once_per_caller(pool) -> None:
    account = str(uuid.uuid4())
    first = await accept(pool, account, key="k-1")
    again = await accept(pool, account, key="k-1")
    other_caller = await accept(pool, account, NoticeKind.PAYMENT, key="k-1", caller="wallet")

    assert again == first
    assert other_caller.notice_id != first.notice_id
    assert await pool.fetchval("select count(*) from notices") == 2


async def test_a_notice_gets_one_pending_delivery_per_planned_channel(pool) -> None:
    accepted = await accept(pool, str(uuid.uuid4()), NoticeKind.PASSWORD_CHANGED)

    assert await statuses(pool, accepted.notice_id) == {
        channel: "pending" for channel in (Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.INBOX)
    }


async def test_racing_resets_beyond_the_limit_are_coalesced_not_sent(pool) -> None:
    account = str(uuid.uuid4())
    accepted = await asyncio.gather(
        *(
            accept(pool, account, NoticeKind.PASSWORD_RESET, params={"secret": "s"})
            for _ in range(8)
        )
    )

    assert sum(not a.coalesced for a in accepted) == LIMIT.limit
    for notice in accepted:
        expected = DeliveryStatus.COALESCED if notice.coalesced else DeliveryStatus.PENDING
        assert await statuses(pool, notice.notice_id) == {Channel.EMAIL: expected.stored}


async def test_news_a_person_muted_is_stored_muted(pool) -> None:
    account = str(uuid.uuid4())
    await PreferenceStore(pool).set_muted_kinds(uuid.UUID(account), [NoticeKind.NEWS])

    muted = await accept(pool, account, NoticeKind.NEWS, caller="operator", params={"title": "t"})
    heard = await accept(pool, str(uuid.uuid4()), NoticeKind.NEWS, caller="operator")

    assert set((await statuses(pool, muted.notice_id)).values()) == {"muted"}
    assert set((await statuses(pool, heard.notice_id)).values()) == {"pending"}


def notice(kind: NoticeKind, key: str, *, payer: str = "", account: str = "") -> NewNotice:
    return NewNotice(
        kind=kind,
        caller="wallet" if payer else "identity",
        idempotency_key=key,
        recipient=Recipient(payer_id=payer or None, account_id=account or None),
        params={"amount": 1_200, "counterparty": "ローソン"} if payer else {"secret": "s"},
    )


async def test_notices_accepted_together_are_stored_as_if_accepted_one_by_one(pool) -> None:
    payer, account = str(uuid.uuid4()), str(uuid.uuid4())
    earlier = await NoticeStore(pool).accept(
        notice(NoticeKind.PAYMENT, "pay-0", payer=payer), LIMIT
    )
    batch = [
        notice(NoticeKind.PAYMENT, "pay-1", payer=payer),
        notice(NoticeKind.PAYMENT, "pay-0", payer=payer),  # stored before
        notice(NoticeKind.PAYMENT, "pay-2", payer=payer),
        notice(NoticeKind.PAYMENT, "pay-1", payer=payer),  # twice in the batch
        *(notice(NoticeKind.PASSWORD_RESET, f"reset-{n}", account=account) for n in range(5)),
    ]

    accepted = await NoticeStore(pool).accept_many(batch, LIMIT)

    assert accepted[1] == earlier
    assert accepted[3] == accepted[0] and accepted[0].notice_id != accepted[2].notice_id
    assert await pool.fetchval("select count(*) from notices where caller = 'wallet'") == 3
    for paid in (accepted[0], accepted[2]):
        assert set((await statuses(pool, paid.notice_id)).values()) == {"pending"}
    # Resets need their recipient's recent count: the rate limit holds within a batch.
    resets = accepted[4:]
    assert sum(not a.coalesced for a in resets) == LIMIT.limit
