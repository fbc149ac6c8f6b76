"""Operator alerts reach people through notify: the outbox topic risk emits, and
its delivery."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import grpc
from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc

from services.runtime.outbox import OutboxMessage

OPERATOR_ALERT_TOPIC = "risk.operator_alert"


def notify_operators(
    channel: grpc.aio.Channel,
) -> Callable[[OutboxMessage], Awaitable[None]]:
    """Outbox delivery: notify's SendOperatorAlert with the message's idempotency key."""
    stub = notify_pb2_grpc.NotifyServiceStub(channel)

    async def deliver(message: OutboxMessage) -> None:
        payload = message.payload
        await stub.SendOperatorAlert(
            notify_pb2.SendOperatorAlertRequest(
                alert_id=payload["alert_id"],
                severity=notify_pb2.SEVERITY_CRITICAL
                if payload["auto_action_taken"]
                else notify_pb2.SEVERITY_WARNING,
                summary=payload["summary"][:200],
                evidence_json=json.dumps(payload["evidence"], sort_keys=True),
                idempotency_key=message.idempotency_key,
            ),
            timeout=5,
        )

    return deliver
