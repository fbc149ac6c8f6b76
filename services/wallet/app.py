"""Use cases that span the ledger and an outside party (the card processor, the
loyalty program, notify, risk)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc
from mamoru.risk.v1 import risk_pb2

from services.runtime.errors import FailedPrecondition, Unavailable
from services.runtime.outbox import OutboxMessage
from services.wallet.domain.compensation import CARD_REFUND
from services.wallet.points import PointsProgram, PointsRefused, PointsUnavailable
from services.wallet.processor import CardProcessor, ProcessorDeclined, ProcessorUnavailable
from services.wallet.risk_gate import jpy
from services.wallet.storage import (
    NOTICE_TOPIC,
    OUTCOME_TOPIC,
    PAYOUT_TOPIC,
    CompensationLineRow,
    PendingCardTopUp,
    PendingPointsTopUp,
    WalletStore,
)

log = structlog.get_logger(__name__)


async def card_top_up(
    store: WalletStore,
    processor: CardProcessor,
    *,
    wallet_id: uuid.UUID,
    funding_source_id: uuid.UUID,
    amount: int,
    session_id: str,
    idempotency_key: str,
    request_hash: str,
    decision_id: str = "",
) -> dict[str, Any]:
    """Reserve under the limits, charge the card, post. A retry resumes where it stopped."""
    started = await store.begin_card_top_up(
        wallet_id=wallet_id,
        funding_source_id=funding_source_id,
        amount=amount,
        session_id=session_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    if not isinstance(started, PendingCardTopUp):
        return started
    try:
        # The reservation id is the processor's idempotency key: a retry after a
        # timeout cannot charge the card twice.
        charge_id = await processor.charge(
            started.processor_token, started.amount, idempotency_key=f"top_up:{started.top_up_id}"
        )
    except ProcessorDeclined as declined:
        await store.fail_top_up(started.top_up_id)
        raise FailedPrecondition(
            "CARD_DECLINED", "the card was declined", metadata={"processor": declined.reason}
        ) from None
    except ProcessorUnavailable:
        # The charge may have happened: keep the reservation so a retry with the
        # same key completes it instead of charging again.
        raise Unavailable(
            "PROCESSOR_UNAVAILABLE", "the card processor did not answer; retry with the same key"
        ) from None
    return await store.finish_top_up(started.top_up_id, charge_id, decision_id=decision_id)


async def points_top_up(
    store: WalletStore,
    program: PointsProgram,
    *,
    wallet_id: uuid.UUID,
    amount: int,
    session_id: str,
    idempotency_key: str,
    request_hash: str,
    decision_id: str = "",
) -> dict[str, Any]:
    """Reserve under the limits, redeem the points, credit. A retry resumes where it stopped."""
    started = await store.begin_points_top_up(
        wallet_id=wallet_id,
        amount=amount,
        session_id=session_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    if not isinstance(started, PendingPointsTopUp):
        return started
    try:
        # The reservation id is the program's idempotency key: a retry after a
        # lost answer cannot redeem the points twice.
        redemption_id = await program.redeem(
            started.payer_id, started.amount, idempotency_key=f"top_up:{started.top_up_id}"
        )
    except PointsRefused:
        await store.fail_top_up(started.top_up_id)
        # An unknown member and a short balance read the same to the caller.
        raise FailedPrecondition(
            "INSUFFICIENT_POINTS", "there are not enough points for this top-up"
        ) from None
    except PointsUnavailable:
        # The points may be gone: keep the reservation so a retry with the same
        # key completes it instead of redeeming again.
        raise Unavailable(
            "POINTS_UNAVAILABLE", "the points program did not answer; retry with the same key"
        ) from None
    return await store.finish_top_up(started.top_up_id, redemption_id, decision_id=decision_id)


@dataclass(frozen=True)
class CompensationRun:
    lines: list[CompensationLineRow]
    newly_paid: int


async def compensate_movements(
    store: WalletStore,
    processor: CardProcessor,
    *,
    case_id: uuid.UUID,
    movement_ids: Sequence[uuid.UUID],
    reason: str,
) -> CompensationRun:
    """Make good every unauthorized movement of a case, once, however often it runs."""
    movements = await store.movements_for_compensation(movement_ids)
    await store.plan_compensation(case_id, movements, reason)
    newly_paid = 0
    # Wallet credits come first (the lines are ordered so), then card reversals.
    for line in await store.compensation_lines(case_id):
        if line.status == "paid":
            continue
        if line.method == CARD_REFUND:
            if line.processor_charge_id is None:
                raise FailedPrecondition("CHARGE_UNKNOWN", "the card charge is not recorded")
            try:
                await processor.refund(
                    line.processor_charge_id,
                    line.amount,
                    idempotency_key=f"compensation:{line.movement_id}",
                )
            except (ProcessorDeclined, ProcessorUnavailable) as error:
                raise Unavailable(
                    "PROCESSOR_UNAVAILABLE",
                    "a card refund failed; run the compensation again",
                    metadata={"movement_id": str(line.movement_id), "error": str(error)},
                ) from None
        if await store.settle_line(case_id, line.movement_id):
            newly_paid += 1
    return CompensationRun(await store.compensation_lines(case_id), newly_paid)


def _timestamp(iso: str) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(iso))
    return stamp


def outbox_delivery(
    notify: notify_pb2_grpc.NotifyServiceStub,
    record_outcome: Callable[[risk_pb2.RecordOutcomeRequest], Awaitable[None]],
    processor: CardProcessor,
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
                money.occurred_at.CopyFrom(_timestamp(body["occurred_at"]))
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
                    occurred_at=_timestamp(body["occurred_at"]),
                )
            )
        elif message.topic == PAYOUT_TOPIC:
            await processor.payout(body)
        else:
            log.error("outbox.unknown_topic", topic=message.topic)
            raise ValueError(f"unknown topic {message.topic}")

    return deliver
