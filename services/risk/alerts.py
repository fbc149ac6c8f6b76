"""Aggregate alerts: a background job raises them, the outbox tells operators through notify."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import structlog
from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc

from services.risk import storage
from services.risk.domain.alerts import ALERT_RULES, fired_alerts
from services.risk.domain.policy import parse_switch
from services.risk.state import RiskState
from services.runtime.outages import OutageLog
from services.runtime.outbox import OutboxMessage

log = structlog.get_logger(__name__)

OPERATOR_ALERT_TOPIC = "risk.operator_alert"


class AlertJob:
    def __init__(
        self,
        pool: asyncpg.Pool,
        state: RiskState,
        *,
        interval_seconds: float,
        home_countries: tuple[str, ...],
    ) -> None:
        self._pool = pool
        self._state = state
        self._interval = interval_seconds
        self._home = home_countries

    async def evaluate(self) -> int:
        """One pass: raise every alert whose rule fires; returns how many were raised."""
        now = datetime.now(UTC)
        rules = self._state.rules
        windows = {rule_id: rules.window(rule_id) for rule_id in ALERT_RULES}
        aggregates = await storage.alert_aggregates(
            self._pool, now=now, windows=windows, home_countries=self._home
        )
        raised = 0
        for fired in fired_alerts(aggregates, rules):
            action = None
            if fired.rule.auto_action:
                try:
                    action = parse_switch(fired.rule.auto_action)
                except ValueError:
                    log.warning("alert.bad_auto_action", rule_id=fired.rule.rule_id)
            result = await storage.raise_alert(
                self._pool,
                rule_id=fired.rule.rule_id,
                evidence=fired.evidence,
                quiet_since=now - timedelta(seconds=windows[fired.rule.rule_id]),
                auto_action=action,
                outbox_topic=OPERATOR_ALERT_TOPIC,
                summary=f"{fired.rule.description}: {fired.observed:g} "
                f"(threshold {fired.threshold:g})",
            )
            if result is not None:
                raised += 1
                alert_id, policy = result
                log.warning("alert.raised", rule_id=fired.rule.rule_id, alert_id=str(alert_id))
                if policy is not None:
                    await self._state.publish_policy(policy)
        return raised

    async def run(self, stop: asyncio.Event) -> None:
        outage = OutageLog(log, "alerts.evaluation_failed")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)
            if stop.is_set():
                return
            try:
                await self.evaluate()
            except Exception as error:
                outage.failed(error)
            else:
                outage.ok()


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
