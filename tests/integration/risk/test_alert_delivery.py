"""Operator alerts leave the outbox as notify's SendOperatorAlert, rows stored
under the older topic included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from mamoru.notify.v1 import notify_pb2

from services.risk.clients.notify import LEGACY_OPERATOR_ALERT, alert_notice, alert_router
from services.risk.storage import alerts
from services.runtime.outbox import OutboxRelay, enqueue


class Notify:
    def __init__(self) -> None:
        self.sent: list[notify_pb2.SendOperatorAlertRequest] = []

    async def __call__(self, request: notify_pb2.SendOperatorAlertRequest) -> None:
        self.sent.append(request)


async def test_a_raised_alert_is_delivered_as_its_operator_alert_request(pool):
    raised = await alerts.raise_alert(
        pool, rule_id="alert.stuffing_wave", evidence={"failed_sign_ins": 1200.0, "a": 1},
        quiet_since=datetime.now(UTC) - timedelta(minutes=10), auto_action=None,
        notice=alert_notice("x" * 300, {"failed_sign_ins": 1200.0, "a": 1}),
    )  # fmt: skip
    assert raised is not None
    notify = Notify()
    assert await OutboxRelay(pool, alert_router(notify)).deliver_due() == 1
    assert notify.sent == [
        notify_pb2.SendOperatorAlertRequest(
            alert_id=str(raised[0]), severity=notify_pb2.SEVERITY_WARNING, summary="x" * 200,
            evidence_json='{"a": 1, "failed_sign_ins": 1200.0}',
            idempotency_key=f"risk-alert:{raised[0]}",
        )
    ]  # fmt: skip


async def test_an_alert_row_stored_under_the_legacy_topic_still_delivers(pool):
    alert_id = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(
            conn, topic=LEGACY_OPERATOR_ALERT.name, idempotency_key=f"risk-alert:{alert_id}",
            payload={
                "alert_id": str(alert_id), "rule_id": "alert.stuffing_wave", "summary": "wave",
                "evidence": {"failed_sign_ins": 1200, "ratio": 0.5},
                "auto_action_taken": '{"switch": "sign_in_captcha"}',
            },
        )  # fmt: skip
    notify = Notify()
    assert await OutboxRelay(pool, alert_router(notify)).deliver_due() == 1
    assert notify.sent == [
        notify_pb2.SendOperatorAlertRequest(
            alert_id=str(alert_id), severity=notify_pb2.SEVERITY_CRITICAL, summary="wave",
            evidence_json='{"failed_sign_ins": 1200, "ratio": 0.5}',
            idempotency_key=f"risk-alert:{alert_id}",
        )
    ]  # fmt: skip
    assert await pool.fetchval("select state from outbox") == "delivered"
