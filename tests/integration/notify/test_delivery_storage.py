"""Deliveries on real PostgreSQL: what a claim reads, outcomes only the lease holder
may record, dead letters and their retry, statistics."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from services.notify.domain.kinds import Channel, DeliveryStatus, NoticeKind
from services.notify.domain.notices import ClaimedDelivery, DeliveryOutcome, SentDelivery
from services.notify.domain.routing import Recipient
from services.notify.storage import deliveries
from services.notify.storage.deliveries import DeliveryStore
from services.runtime.queue import LeasedQueue, RetryPolicy
from tests.integration.notify.conftest import accept


async def claim_all(pool) -> list[ClaimedDelivery]:
    """Claim every due delivery, keeping what the claim read and recording nothing."""
    claimed: list[ClaimedDelivery] = []

    async def keep(items: Sequence[ClaimedDelivery]) -> list[BaseException | None]:
        claimed.extend(items)
        return [None] * len(items)

    await LeasedQueue(pool, deliveries.QUEUE, RetryPolicy(), attempt_batch=keep).deliver_due()
    return claimed


async def test_a_claim_reads_the_notice_with_its_recipient_and_parameters(pool) -> None:
    account = str(uuid.uuid4())
    accepted = await accept(pool, account, NoticeKind.SIGN_IN_CODE, params={"secret": "42"})

    (claimed,) = await claim_all(pool)

    assert (claimed.notice_id, claimed.kind, claimed.channel, claimed.attempts) == (
        accepted.notice_id,
        NoticeKind.SIGN_IN_CODE,
        Channel.EMAIL,
        1,
    )
    assert claimed.recipient == Recipient(account_id=account)
    assert claimed.params == {"secret": "42"}
    assert await claim_all(pool) == [], "claimed again while leased"


async def test_no_address_is_recorded_only_by_the_lease_holder(pool) -> None:
    account = str(uuid.uuid4())
    await accept(pool, account, NoticeKind.SIGN_IN_CODE, params={"secret": "42"})
    (claimed,) = await claim_all(pool)
    store = DeliveryStore(pool)
    stale = ClaimedDelivery(**{**claimed.__dict__, "lease_token": uuid.uuid4()})

    await store.record([DeliveryOutcome(stale, Channel.EMAIL, None, why="stale")])
    (pending,) = await store.of_account(uuid.UUID(account), before_seq=None, limit=5)
    assert pending.status is DeliveryStatus.PENDING

    await store.record([DeliveryOutcome(claimed, Channel.EMAIL, None, why="none")])
    (recorded,) = await store.of_account(uuid.UUID(account), before_seq=None, limit=5)
    assert (recorded.status, recorded.last_error) == (DeliveryStatus.NO_ADDRESS, "none")


async def test_a_sent_delivery_keeps_its_address_and_provider(pool) -> None:
    account = str(uuid.uuid4())
    await accept(pool, account, NoticeKind.SIGN_IN_CODE, params={"secret": "42"})
    (claimed,) = await claim_all(pool)
    store = DeliveryStore(pool)

    sent = SentDelivery(Channel.EMAIL, account, ("a@example.jp", "b@example.jp"), "smtp-main")
    await store.record([DeliveryOutcome(claimed, Channel.EMAIL, account, sent=sent)])

    (record,) = await store.of_account(uuid.UUID(account), before_seq=None, limit=5)
    assert (record.status, record.address, record.provider) == (
        DeliveryStatus.SENT,
        "a@example.jp, b@example.jp",
        "smtp-main",
    )
    assert record.sent_at is not None
    assert await store.oldest_due_age_seconds() == 0.0


async def test_recording_a_handed_on_code_forgets_its_secret_and_keeps_the_other_parameters(
    pool,
) -> None:
    account = str(uuid.uuid4())
    accepted = await accept(
        pool, account, NoticeKind.SIGN_IN_CODE, params={"secret": "123456", "x": 1}
    )
    (claimed,) = await claim_all(pool)

    sent = SentDelivery(Channel.EMAIL, account, ("a@example.jp",), "smtp-main")
    await DeliveryStore(pool).record(
        [DeliveryOutcome(claimed, Channel.EMAIL, account, sent=sent, forget_secret=True)]
    )

    params = await pool.fetchval("select params from notices where id = $1", accepted.notice_id)
    assert params == {"x": 1}


async def test_a_batch_records_each_outcome_but_a_no_address_decided_under_a_lost_lease(
    pool,
) -> None:
    accounts = [str(uuid.uuid4()) for _ in range(3)]
    for account in accounts:
        await accept(pool, account, NoticeKind.SIGN_IN_CODE, params={"secret": "42"})
    first, second, third = sorted(
        await claim_all(pool),
        key=lambda c: accounts.index(str(c.recipient and c.recipient.account_id)),
    )
    stale = ClaimedDelivery(**{**third.__dict__, "lease_token": uuid.uuid4()})
    sent = SentDelivery(Channel.EMAIL, accounts[0], ("a@example.jp",), "smtp-main")
    store = DeliveryStore(pool)

    await store.record(
        [
            DeliveryOutcome(first, Channel.EMAIL, accounts[0], sent=sent),
            DeliveryOutcome(second, Channel.SMS, accounts[1], why="no phone"),
            DeliveryOutcome(stale, Channel.EMAIL, None, why="decided under a lost lease"),
        ]
    )

    statuses = [
        (record.status, record.channel, record.address, record.last_error)
        for account in accounts
        for record in await store.of_account(uuid.UUID(account), before_seq=None, limit=5)
    ]
    assert statuses == [
        (DeliveryStatus.SENT, Channel.EMAIL, "a@example.jp", ""),
        (DeliveryStatus.NO_ADDRESS, Channel.SMS, "", "no phone"),
        (DeliveryStatus.PENDING, Channel.EMAIL, "", ""),
    ]


async def test_only_a_dead_delivery_can_be_retried_and_it_starts_afresh(pool) -> None:
    account = str(uuid.uuid4())
    await accept(pool, account, NoticeKind.SIGN_IN_CODE, params={"secret": "42"})
    store = DeliveryStore(pool)
    (record,) = await store.of_account(uuid.UUID(account), before_seq=None, limit=5)

    assert await store.retry_dead(record.delivery_id) is None
    await pool.execute("update deliveries set status = 'dead', attempts = 8")
    assert [d.delivery_id for d in await store.dead_letters(before_seq=None, limit=5)] == [
        record.delivery_id
    ]

    retried = await store.retry_dead(record.delivery_id)
    assert retried is not None
    assert (retried.status, retried.attempts) == (DeliveryStatus.PENDING, 0)
    assert await store.dead_letters(before_seq=None, limit=5) == []
    assert await store.get(uuid.uuid4()) is None


async def test_statistics_count_each_status_per_kind_and_channel(pool) -> None:
    await accept(pool, str(uuid.uuid4()), NoticeKind.SIGN_IN_CODE, params={"secret": "1"})
    await accept(pool, str(uuid.uuid4()), NoticeKind.SIGN_IN_CODE, params={"secret": "2"})
    await pool.execute(
        "update deliveries set status = 'dead' where id = (select id from deliveries limit 1)"
    )
    now = datetime.now(UTC)

    (row,) = await DeliveryStore(pool).stats(now - timedelta(minutes=5), now + timedelta(minutes=5))

    assert (row.kind, row.channel, row.sent, row.failed, row.dead, row.coalesced) == (
        NoticeKind.SIGN_IN_CODE,
        Channel.EMAIL,
        0,
        0,
        1,
        0,
    )
