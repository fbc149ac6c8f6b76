"""Aggregate alerts: raised by a periodic evaluation, worked on by operators.

An alert, its notice to operators (through the outbox) and its automatic switch
are stored together; the replica that raised it applies the switch at once.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg
import structlog

from services.risk.clients.notify import alert_notice
from services.risk.domain.alerts import ALERT_RULES, Alert, fired_alerts
from services.risk.domain.policy import parse_switch
from services.risk.storage import alerts as alert_store
from services.risk.use_cases.assessments import utc_now
from services.risk.use_cases.policies import RiskState
from services.risk.use_cases.ports import Clock
from services.runtime.errors import NotFound

log = structlog.get_logger(__name__)


class Alerts:
    def __init__(
        self,
        pool: asyncpg.Pool,
        state: RiskState,
        *,
        home_countries: tuple[str, ...],
        clock: Clock = utc_now,
    ) -> None:
        self._pool = pool
        self._state = state
        self._home = home_countries
        self._clock = clock

    async def evaluate(self) -> int:
        """One pass: raise every alert whose rule fires; returns how many were raised."""
        now = self._clock()
        rules = self._state.rules
        windows = {rule_id: rules.window(rule_id) for rule_id in ALERT_RULES}
        aggregates = await alert_store.alert_aggregates(
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
            result = await alert_store.raise_alert(
                self._pool,
                rule_id=fired.rule.rule_id,
                evidence=fired.evidence,
                quiet_since=now - timedelta(seconds=windows[fired.rule.rule_id]),
                auto_action=action,
                notice=alert_notice(
                    f"{fired.rule.description}: {fired.observed:g} (threshold {fired.threshold:g})",
                    fired.evidence,
                ),
            )
            if result is not None:
                raised += 1
                alert_id, policy = result
                log.warning("alert.raised", rule_id=fired.rule.rule_id, alert_id=str(alert_id))
                if policy is not None:
                    await self._state.publish_policy(policy)
        return raised

    async def page(
        self, *, status: str, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[Alert]:
        return await alert_store.list_alerts(self._pool, status=status, limit=limit, after=after)

    async def update(self, alert_id: uuid.UUID, *, status: str, note: str | None) -> Alert:
        alert = await alert_store.update_alert(self._pool, alert_id, status=status, note=note)
        if alert is None:
            raise NotFound("ALERT_NOT_FOUND", "no such alert")
        return alert
