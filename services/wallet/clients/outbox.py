"""What the wallet sends through its outbox: notices to the payer (notify),
outcomes of movements (risk) and bank transfers (the card processor's payouts).

Messages are enqueued in the movement's own transaction and delivered by the relay
wired in bootstrap, so a movement and its messages commit together or not at all.
Each is stored as the request it becomes, so delivery needs no knowledge of the
movement.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import outbox_pb2

from services.runtime.batching import CallBatcher, grpc_one_by_one
from services.runtime.convert import timestamp
from services.runtime.outbox import OutboxMessage
from services.runtime.topics import OutboxRouter, Topic
from services.wallet.clients.money import jpy

NOTICE = Topic("wallet.notice.v2", notify_pb2.SendNoticeRequest)
OUTCOME = Topic("wallet.outcome.v2", risk_pb2.RecordOutcomeRequest)
PAYOUT = Topic("wallet.payout.v2", outbox_pb2.PayoutOrder)
# Rows stored before the outbox carried the requests themselves: the movement's
# facts, turned into the request at delivery. Read from the stored JSON, never
# through the Struct, which would turn their integers into floats.
LEGACY_NOTICE = Topic("wallet.notice", Struct)
LEGACY_OUTCOME = Topic("wallet.outcome", Struct)
LEGACY_PAYOUT = Topic("wallet.payout", Struct)

# Mirrors of notify's NoticeKind and risk's Outcome numbers, kept in the outbox
# payload so the relay needs no knowledge of the movement to deliver it.
NOTICE_TOP_UP, NOTICE_PAYMENT, NOTICE_REFUND = 20, 21, 22
NOTICE_COMPENSATION, NOTICE_PAYOUT, NOTICE_WALLET_STATUS, NOTICE_WIND_DOWN = 23, 24, 25, 26
OUTCOME_TOP_UP_COMPLETED, OUTCOME_PAYMENT_CAPTURED, OUTCOME_PAYMENT_REFUNDED = 6, 7, 8


@dataclass(frozen=True)
class Outgoing:
    """One message for the outbox: its topic, the request it carries, its key."""

    topic: Topic[Any]
    message: Message
    idempotency_key: str


def announcement(
    *,
    notice_kind: int,
    outcome: int | None,
    payer_id: str,
    wallet_id: uuid.UUID,
    entry_id: uuid.UUID,
    amount: int,
    balance_after: int,
    counterparty: str,
    occurred_at: datetime,
    session_id: str = "",
    decision_id: str = "",
) -> list[Outgoing]:
    """The movement's notice to the payer and its outcome for risk's victim queries."""
    common = {
        "payer_id": payer_id,
        "wallet_id": str(wallet_id),
        "movement_id": str(entry_id),
        "amount": amount,
        "occurred_at": occurred_at.isoformat(),
    }
    key = f"notice:{entry_id}"
    notice = notice_request(
        {
            **common,
            "kind": notice_kind,
            "counterparty": counterparty[:200],
            "balance_after": balance_after,
        },
        idempotency_key=key,
    )
    messages = [Outgoing(NOTICE, notice, key)]
    if outcome is not None:
        request = outcome_request(
            {**common, "outcome": outcome, "session_id": session_id, "decision_id": decision_id}
        )
        messages.append(Outgoing(OUTCOME, request, f"outcome:{entry_id}"))
    return messages


async def enqueue_all(conn: asyncpg.Connection, messages: Sequence[Outgoing]) -> None:
    """Store ``messages`` in the caller's transaction, one statement each."""
    for outgoing in messages:
        await outgoing.topic.enqueue(
            conn, outgoing.message, idempotency_key=outgoing.idempotency_key
        )


def outbox_rows(messages: Sequence[Outgoing]) -> tuple[list[str], list[str], list[str]]:
    """Topics, keys and JSON payloads, stored as ``Topic.enqueue`` stores them, for a
    movement that writes its messages in the same statement as its postings."""
    return (
        [m.topic.name for m in messages],
        [m.idempotency_key for m in messages],
        [
            json.dumps(json_format.MessageToDict(m.message, preserving_proto_field_name=True))
            for m in messages
        ],
    )


async def tell_payer(
    conn: asyncpg.Connection, *, key: str, payer_id: str, kind: int, detail: str, **money: int
) -> None:
    """A notice about the wallet rather than a movement (status, payout account, wind-down)."""
    notice = notice_request(
        {"payer_id": payer_id, "kind": kind, **money, "detail": detail}, idempotency_key=key
    )
    await NOTICE.enqueue(conn, notice, idempotency_key=key)


async def order_payout(
    conn: asyncpg.Connection, entry_id: uuid.UUID, amount: int, account: dict[str, Any]
) -> None:
    order = payout_order({"payout_id": str(entry_id), "amount": amount, **account})
    await PAYOUT.enqueue(conn, order, idempotency_key=f"payout:{entry_id}")


def notice_request(body: dict[str, Any], *, idempotency_key: str) -> notify_pb2.SendNoticeRequest:
    """The payer's notice from a movement's facts; money fields only when given."""
    money = notify_pb2.MoneyParams(
        counterparty=str(body.get("counterparty", "")),
        movement_id=str(body.get("movement_id", "")),
        detail=str(body.get("detail", "")),
    )
    if "amount" in body:
        money.amount.CopyFrom(jpy(int(body["amount"])))
    if "balance_after" in body:
        money.balance_after.CopyFrom(jpy(int(body["balance_after"])))
    if "occurred_at" in body:
        money.occurred_at.CopyFrom(_stamp(body["occurred_at"]))
    return notify_pb2.SendNoticeRequest(
        payer_id=body["payer_id"],
        kind=body["kind"],
        money=money,
        idempotency_key=idempotency_key,
    )


def outcome_request(body: dict[str, Any]) -> risk_pb2.RecordOutcomeRequest:
    """Risk's record of a movement, from the movement's facts."""
    return risk_pb2.RecordOutcomeRequest(
        decision_id=body.get("decision_id", ""),
        outcome=body["outcome"],
        wallet_id=body["wallet_id"],
        payer_id=body["payer_id"],
        session_id=body.get("session_id", ""),
        amount=jpy(int(body["amount"])),
        movement_id=body["movement_id"],
        occurred_at=_stamp(body["occurred_at"]),
    )


_PAYOUT_FIELDS = (
    "payout_id",
    "amount",
    "bank_code",
    "branch_code",
    "account_number",
    "holder_name",
    "session_id",
)


def payout_order(body: dict[str, Any]) -> outbox_pb2.PayoutOrder:
    return outbox_pb2.PayoutOrder(**{name: body[name] for name in _PAYOUT_FIELDS})


def payout_body(order: outbox_pb2.PayoutOrder) -> dict[str, Any]:
    """The card processor's payout request: the order's fields, the amount an integer."""
    return {name: getattr(order, name) for name in _PAYOUT_FIELDS}


class Bank(Protocol):
    async def payout(self, payout: dict[str, Any]) -> str: ...


def delivery(
    notify: notify_pb2_grpc.NotifyServiceStub,
    record_outcome: Callable[[risk_pb2.RecordOutcomeRequest], Awaitable[None]],
    bank: Bank,
) -> OutboxRouter:
    """Deliver the wallet's outbox: notices to notify, outcomes to risk, payouts to the bank.

    The relay hands on a claimed batch at once, so the notices in it reach notify
    in one SendNotices call (and the outcomes risk in one RecordOutcomes call,
    ``record_outcome`` batching them).
    """

    async def send_notices(
        requests: list[notify_pb2.SendNoticeRequest],
    ) -> list[notify_pb2.SendNoticeResponse]:
        reply = await notify.SendNotices(
            notify_pb2.SendNoticesRequest(notices=requests), timeout=10
        )
        return list(reply.answers)

    async def send_one_notice(
        request: notify_pb2.SendNoticeRequest,
    ) -> notify_pb2.SendNoticeResponse:
        reply: notify_pb2.SendNoticeResponse = await notify.SendNotice(request, timeout=10)
        return reply

    notices = CallBatcher(
        send_notices, name="notify.SendNotices", one_by_one=grpc_one_by_one(send_one_notice)
    )

    async def send_notice(request: notify_pb2.SendNoticeRequest, _: OutboxMessage) -> None:
        await notices.call(request)

    async def send_outcome(request: risk_pb2.RecordOutcomeRequest, _: OutboxMessage) -> None:
        await record_outcome(request)

    async def pay_out(order: outbox_pb2.PayoutOrder, _: OutboxMessage) -> None:
        await bank.payout(payout_body(order))

    async def legacy_notice(_: Struct, message: OutboxMessage) -> None:
        await notices.call(notice_request(message.payload, idempotency_key=message.idempotency_key))

    async def legacy_outcome(_: Struct, message: OutboxMessage) -> None:
        await record_outcome(outcome_request(message.payload))

    async def legacy_payout(_: Struct, message: OutboxMessage) -> None:
        await bank.payout(message.payload)

    return (
        OutboxRouter()
        .on(NOTICE, send_notice)
        .on(OUTCOME, send_outcome)
        .on(PAYOUT, pay_out)
        .on(LEGACY_NOTICE, legacy_notice)
        .on(LEGACY_OUTCOME, legacy_outcome)
        .on(LEGACY_PAYOUT, legacy_payout)
    )


def _stamp(iso: str) -> Any:
    return timestamp(datetime.fromisoformat(iso))
