"""What the wallet sends through its outbox: notices to the payer (notify),
outcomes of movements (risk) and bank transfers (the card processor's payouts).

Messages are enqueued in the movement's own transaction and delivered by the relay
wired in bootstrap, so a movement and its messages commit together or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import structlog
from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc
from mamoru.risk.v1 import risk_pb2

from services.runtime.convert import timestamp
from services.runtime.outbox import OutboxMessage, enqueue
from services.wallet.clients.money import jpy

log = structlog.get_logger(__name__)

NOTICE_TOPIC = "wallet.notice"
OUTCOME_TOPIC = "wallet.outcome"
PAYOUT_TOPIC = "wallet.payout"

# Mirrors of notify's NoticeKind and risk's Outcome numbers, kept in the outbox
# payload so the relay needs no knowledge of the movement to deliver it.
NOTICE_TOP_UP, NOTICE_PAYMENT, NOTICE_REFUND = 20, 21, 22
NOTICE_COMPENSATION, NOTICE_PAYOUT, NOTICE_WALLET_STATUS, NOTICE_WIND_DOWN = 23, 24, 25, 26
OUTCOME_TOP_UP_COMPLETED, OUTCOME_PAYMENT_CAPTURED, OUTCOME_PAYMENT_REFUNDED = 6, 7, 8


async def announce(
    conn: asyncpg.Connection,
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
) -> None:
    """The movement's notice to the payer and its outcome for risk's victim queries."""
    common = {
        "payer_id": payer_id,
        "wallet_id": str(wallet_id),
        "movement_id": str(entry_id),
        "amount": amount,
        "occurred_at": occurred_at.isoformat(),
    }
    await enqueue(
        conn,
        topic=NOTICE_TOPIC,
        idempotency_key=f"notice:{entry_id}",
        payload={
            **common,
            "kind": notice_kind,
            "counterparty": counterparty[:200],
            "balance_after": balance_after,
        },
    )
    if outcome is not None:
        await enqueue(
            conn,
            topic=OUTCOME_TOPIC,
            idempotency_key=f"outcome:{entry_id}",
            payload={
                **common,
                "outcome": outcome,
                "session_id": session_id,
                "decision_id": decision_id,
            },
        )


async def tell_payer(
    conn: asyncpg.Connection, *, key: str, payer_id: str, kind: int, detail: str, **money: int
) -> None:
    """A notice about the wallet rather than a movement (status, payout account, wind-down)."""
    await enqueue(
        conn,
        topic=NOTICE_TOPIC,
        idempotency_key=key,
        payload={"payer_id": payer_id, "kind": kind, **money, "detail": detail},
    )


async def order_payout(
    conn: asyncpg.Connection, entry_id: uuid.UUID, amount: int, account: dict[str, Any]
) -> None:
    await enqueue(
        conn,
        topic=PAYOUT_TOPIC,
        idempotency_key=f"payout:{entry_id}",
        payload={"payout_id": str(entry_id), "amount": amount, **account},
    )


class Bank(Protocol):
    async def payout(self, payout: dict[str, Any]) -> str: ...


def delivery(
    notify: notify_pb2_grpc.NotifyServiceStub,
    record_outcome: Callable[[risk_pb2.RecordOutcomeRequest], Awaitable[None]],
    bank: Bank,
) -> Callable[[OutboxMessage], Awaitable[None]]:
    """Deliver the wallet's outbox: notices to notify, outcomes to risk, payouts to the bank."""

    async def deliver(message: OutboxMessage) -> None:
        body = message.payload
        if message.topic == NOTICE_TOPIC:
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
            await notify.SendNotice(
                notify_pb2.SendNoticeRequest(
                    payer_id=body["payer_id"],
                    kind=body["kind"],
                    money=money,
                    idempotency_key=message.idempotency_key,
                ),
                timeout=10,
            )
        elif message.topic == OUTCOME_TOPIC:
            await record_outcome(
                risk_pb2.RecordOutcomeRequest(
                    decision_id=body.get("decision_id", ""),
                    outcome=body["outcome"],
                    wallet_id=body["wallet_id"],
                    payer_id=body["payer_id"],
                    session_id=body.get("session_id", ""),
                    amount=jpy(int(body["amount"])),
                    movement_id=body["movement_id"],
                    occurred_at=_stamp(body["occurred_at"]),
                )
            )
        elif message.topic == PAYOUT_TOPIC:
            await bank.payout(body)
        else:
            log.error("outbox.unknown_topic", topic=message.topic)
            raise ValueError(f"unknown topic {message.topic}")

    return deliver


def _stamp(iso: str) -> Any:
    return timestamp(datetime.fromisoformat(iso))
