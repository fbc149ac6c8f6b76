"""Operator alerts reach people through notify: the outbox topics risk emits, and
their delivery."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from google.protobuf.struct_pb2 import Struct
from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc

from services.runtime.outbox import OutboxMessage
from services.runtime.topics import OutboxRouter, Topic

OPERATOR_ALERT = Topic("notify.send_operator_alert", notify_pb2.SendOperatorAlertRequest)
# Rows enqueued before alerts were stored as the request itself: the alert's facts,
# turned into the request at delivery. Kept so such rows still deliver.
LEGACY_OPERATOR_ALERT = Topic("risk.operator_alert", Struct)

SendAlert = Callable[[notify_pb2.SendOperatorAlertRequest], Awaitable[None]]


def operator_alert(
    alert_id: uuid.UUID, *, summary: str, evidence: dict[str, Any], auto_action_taken: str
) -> notify_pb2.SendOperatorAlertRequest:
    """The notice for one raised alert; an automatic switch makes it critical."""
    return notify_pb2.SendOperatorAlertRequest(
        alert_id=str(alert_id),
        severity=notify_pb2.SEVERITY_CRITICAL if auto_action_taken else notify_pb2.SEVERITY_WARNING,
        summary=summary[:200],
        evidence_json=json.dumps(evidence, sort_keys=True),
        idempotency_key=f"risk-alert:{alert_id}",
    )


def alert_notice(
    summary: str, evidence: dict[str, Any]
) -> Callable[[asyncpg.Connection, uuid.UUID, str], Awaitable[None]]:
    """Enqueues, in the alert's transaction, the notice once its id and switch are known."""

    async def enqueue(conn: asyncpg.Connection, alert_id: uuid.UUID, action: str) -> None:
        request = operator_alert(
            alert_id, summary=summary, evidence=evidence, auto_action_taken=action
        )
        await OPERATOR_ALERT.enqueue(conn, request, idempotency_key=request.idempotency_key)

    return enqueue


def alert_router(send: SendAlert) -> OutboxRouter:
    """Outbox delivery of operator alerts, old rows included, through ``send``."""

    async def deliver(request: notify_pb2.SendOperatorAlertRequest, _: OutboxMessage) -> None:
        await send(request)

    async def deliver_legacy(_: Struct, message: OutboxMessage) -> None:
        # The raw payload, not the Struct: a Struct turns evidence integers into floats.
        payload = message.payload
        request = operator_alert(
            uuid.UUID(payload["alert_id"]),
            summary=payload["summary"],
            evidence=payload["evidence"],
            auto_action_taken=payload["auto_action_taken"],
        )
        request.idempotency_key = message.idempotency_key
        await send(request)

    return OutboxRouter().on(OPERATOR_ALERT, deliver).on(LEGACY_OPERATOR_ALERT, deliver_legacy)


def notify_operators(channel: grpc.aio.Channel) -> OutboxRouter:
    """Outbox delivery: notify's SendOperatorAlert."""
    stub = notify_pb2_grpc.NotifyServiceStub(channel)

    async def send(request: notify_pb2.SendOperatorAlertRequest) -> None:
        await stub.SendOperatorAlert(request, timeout=5)

    return alert_router(send)
