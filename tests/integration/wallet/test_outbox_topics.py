"""The wallet's outbox stores each message as the request it becomes; rows stored
under the older topics, as the movement's facts, still deliver the same requests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, cast

from mamoru.notify.v1 import notify_pb2
from mamoru.risk.v1 import risk_pb2

from services.runtime.outbox import OutboxRelay, enqueue
from services.wallet.clients import outbox

ENTRY = uuid.UUID("0b7d0c1e-0000-4000-8000-000000000001")
WALLET = uuid.UUID("0b7d0c1e-0000-4000-8000-000000000002")
AT = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
# More than a double holds exactly: a float on the way would show.
HUGE = 2**53 + 1
ACCOUNT = {
    "bank_code": "0001", "branch_code": "123", "account_number": "7654321",
    "holder_name": "YAMADA TARO", "session_id": "s-1",
}  # fmt: skip


class Received:
    def __init__(self) -> None:
        self.notices: list[notify_pb2.SendNoticeRequest] = []
        self.outcomes: list[risk_pb2.RecordOutcomeRequest] = []
        self.payouts: list[dict[str, Any]] = []

    async def SendNotices(
        self, request: notify_pb2.SendNoticesRequest, **_: Any
    ) -> notify_pb2.SendNoticesResponse:
        self.notices.extend(request.notices)
        return notify_pb2.SendNoticesResponse(
            answers=[
                notify_pb2.SendNoticeResponse(notice_id=f"n-{n}")
                for n, _ in enumerate(request.notices)
            ]
        )

    async def record_outcome(self, request: risk_pb2.RecordOutcomeRequest) -> None:
        self.outcomes.append(request)

    async def payout(self, payout: dict[str, Any]) -> str:
        self.payouts.append(payout)
        return "transfer-1"


async def deliver_all(pool) -> Received:
    received = Received()
    router = outbox.delivery(cast(Any, received), received.record_outcome, received)
    assert await OutboxRelay(pool, router).deliver_due() == 4
    assert await pool.fetchval("select count(*) from outbox where state = 'delivered'") == 4
    return received


async def test_rows_of_the_older_topics_deliver_what_the_new_ones_do(wallet_store):
    pool = wallet_store.pool
    common = {
        "payer_id": "payer-1", "wallet_id": str(WALLET), "movement_id": str(ENTRY),
        "amount": HUGE, "occurred_at": AT.isoformat(),
    }  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(
            conn, topic="wallet.notice", idempotency_key=f"notice:{ENTRY}",
            payload={**common, "kind": outbox.NOTICE_PAYOUT, "counterparty": "bank 0001-123",
                     "balance_after": 0},
        )  # fmt: skip
        await enqueue(
            conn, topic="wallet.outcome", idempotency_key=f"outcome:{ENTRY}",
            payload={**common, "outcome": outbox.OUTCOME_PAYMENT_CAPTURED, "session_id": "s-1",
                     "decision_id": "d-1"},
        )  # fmt: skip
        await enqueue(
            conn, topic="wallet.payout", idempotency_key=f"payout:{ENTRY}",
            payload={"payout_id": str(ENTRY), "amount": HUGE, **ACCOUNT},
        )  # fmt: skip
        await enqueue(
            conn, topic="wallet.notice", idempotency_key="wind_down:1",
            payload={"payer_id": "payer-1", "kind": outbox.NOTICE_WIND_DOWN, "amount": HUGE,
                     "balance_after": HUGE, "detail": "claim your balance"},
        )  # fmt: skip
    legacy = await deliver_all(pool)

    await pool.execute("truncate outbox")
    async with pool.acquire() as conn, conn.transaction():
        await outbox.enqueue_all(conn, outbox.announcement(
            notice_kind=outbox.NOTICE_PAYOUT, outcome=outbox.OUTCOME_PAYMENT_CAPTURED,
            payer_id="payer-1", wallet_id=WALLET, entry_id=ENTRY, amount=HUGE, balance_after=0,
            counterparty="bank 0001-123", occurred_at=AT, session_id="s-1", decision_id="d-1",
        ))  # fmt: skip
        await outbox.order_payout(conn, ENTRY, HUGE, dict(ACCOUNT))
        await outbox.tell_payer(
            conn, key="wind_down:1", payer_id="payer-1", kind=outbox.NOTICE_WIND_DOWN,
            amount=HUGE, balance_after=HUGE, detail="claim your balance",
        )  # fmt: skip
    topics = {row["topic"] for row in await pool.fetch("select topic from outbox")}
    assert topics == {outbox.NOTICE.name, outbox.OUTCOME.name, outbox.PAYOUT.name}
    typed = await deliver_all(pool)

    assert legacy.payouts == [{"payout_id": str(ENTRY), "amount": HUGE, **ACCOUNT}]
    assert typed.payouts == legacy.payouts
    assert type(typed.payouts[0]["amount"]) is int
    assert sorted(typed.notices, key=lambda n: n.idempotency_key) == sorted(
        legacy.notices, key=lambda n: n.idempotency_key
    )
    assert {n.money.amount.amount_minor for n in legacy.notices} == {HUGE}
    assert typed.outcomes == legacy.outcomes
    assert legacy.outcomes[0].amount.amount_minor == HUGE


async def test_messages_written_beside_a_posting_are_stored_as_the_topics_store_them(
    wallet_store,
):
    pool = wallet_store.pool
    messages = outbox.announcement(
        notice_kind=outbox.NOTICE_PAYMENT, outcome=outbox.OUTCOME_PAYMENT_CAPTURED,
        payer_id="payer-1", wallet_id=WALLET, entry_id=ENTRY, amount=HUGE, balance_after=HUGE,
        counterparty="Lawson 渋谷", occurred_at=AT, session_id="s-1", decision_id="d-1",
    )  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        await outbox.enqueue_all(conn, messages)
    stored = await pool.fetch("select topic, idempotency_key, payload from outbox order by id")

    topics, keys, payloads = outbox.outbox_rows(messages)

    assert [(r["topic"], r["idempotency_key"]) for r in stored] == list(
        zip(topics, keys, strict=True)
    )
    assert [r["payload"] for r in stored] == [json.loads(p) for p in payloads]
