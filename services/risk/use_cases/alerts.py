"""Aggregate alerts: raised by a periodic evaluation, worked on by operators.

An alert, its notice to operators (through the outbox) and its automatic switch
are stored together; the replica that raised it applies the switch at once.

The stuffing wave has its own watch, every second: besides its long window it
sees the rate of failed sign-ins over the last few seconds, so a wave is seen
within seconds of its start, and while the wave lasts it contains the networks
the wave comes from (see domain/containment.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg
import structlog

from services.risk.clients.notify import alert_notice
from services.risk.domain.alerts import (
    ALERT_RULES,
    STUFFING_WAVE,
    Alert,
    FiredAlert,
    RecentFailures,
    fired_alerts,
    stuffing_wave,
)
from services.risk.domain.containment import ContainmentRule, end_of_containment
from services.risk.domain.policy import PolicyChange, parse_switch
from services.risk.domain.windows import bucket_of, window_start
from services.risk.storage import alerts as alert_store
from services.risk.use_cases.assessments import utc_now
from services.risk.use_cases.policies import RiskState
from services.risk.use_cases.ports import Clock
from services.runtime.errors import NotFound

log = structlog.get_logger(__name__)

# While a wave lasts, its sources are read again this often to grow the containment
# (one query over the subnet counters; the policy gets a new version only if it grows).
CONTAINMENT_REFRESH_SECONDS = 5.0


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
        self._recent = RecentFailures()
        self._sources_read_at: datetime | None = None

    async def evaluate(self) -> int:
        """One pass: raise every alert whose rule fires; returns how many were raised.

        The stuffing wave is left to :meth:`watch_stuffing`, which sees both its windows.
        """
        now = self._clock()
        rules = self._state.rules
        windows = {rule_id: rules.window(rule_id) for rule_id in ALERT_RULES}
        aggregates = await alert_store.alert_aggregates(
            self._pool, now=now, windows=windows, home_countries=self._home
        )
        raised = 0
        for fired in fired_alerts(aggregates, rules):
            if fired.rule.rule_id == STUFFING_WAVE:
                continue
            headline = (
                f"{fired.rule.description}: {fired.observed:g} (threshold {fired.threshold:g})"
            )
            quiet_since = now - timedelta(seconds=windows[fired.rule.rule_id])
            if await self._raise(now, fired, headline, quiet_since, None):
                raised += 1
        return raised

    async def watch_stuffing(self) -> bool:
        """One pass of the stuffing watch: raise the wave's alert (with its containment),
        grow or renew the containment while the wave lasts, end one whose time has
        passed. Returns whether the wave is on."""
        now = self._clock()
        rules = self._state.rules
        rule = rules[STUFFING_WAVE]
        window = rule.threshold("window_seconds")
        fast_window = rule.threshold("fast_window_seconds")
        first = min(
            window_start(now, window), bucket_of(now - timedelta(seconds=2 * fast_window)) - 1
        )
        reading = await alert_store.failure_reading(self._pool, now=now, first_bucket=first)
        recent = self._recent.add(reading, fast_window)
        wave = stuffing_wave(reading.since(window_start(now, window)), recent, rules)
        if wave is not None:
            containment = alert_store.Containment(
                ContainmentRule.of(wave.alert.rule), window_start(now, window), now
            )
            quiet_since = now - timedelta(seconds=window)
            if await self._raise(now, wave.alert, wave.headline, quiet_since, containment):
                self._sources_read_at = now
            elif self._containment_due(now, containment.rule):
                self._sources_read_at = now
                policy = await alert_store.contain_wave(
                    self._pool, rule_id=STUFFING_WAVE, quiet_since=quiet_since,
                    containment=containment,
                )  # fmt: skip
                if policy is not None:
                    log.warning("alert.containment_grown", networks=len(policy.contained_networks))
                    await self._state.publish_policy(policy)
        if end_of_containment(self._state.policy, now) is not None:
            ended = await alert_store.end_containment(self._pool, now=now)
            if ended is not None:
                log.warning(
                    "alert.containment_ended", alert_id=self._state.policy.containment_alert_id
                )
                await self._state.publish_policy(ended)
        return wave is not None

    def _containment_due(self, now: datetime, rule: ContainmentRule) -> bool:
        if rule.max_networks == 0:
            return False
        read_at = self._sources_read_at
        if read_at is None or now - read_at >= timedelta(seconds=CONTAINMENT_REFRESH_SECONDS):
            return True
        until = self._state.policy.containment_until
        return until is not None and until - now < timedelta(seconds=rule.seconds / 2)

    async def _raise(
        self,
        now: datetime,
        fired: FiredAlert,
        headline: str,
        quiet_since: datetime,
        containment: alert_store.Containment | None,
    ) -> bool:
        action: PolicyChange | None = None
        if fired.rule.auto_action:
            try:
                action = parse_switch(fired.rule.auto_action)
            except ValueError:
                log.warning("alert.bad_auto_action", rule_id=fired.rule.rule_id)
        result = await alert_store.raise_alert(
            self._pool,
            rule_id=fired.rule.rule_id,
            evidence=fired.evidence,
            quiet_since=quiet_since,
            auto_action=action,
            notice=alert_notice(headline, fired.evidence),
            containment=containment,
            raised_at=now,
        )
        if result is None:
            return False
        alert_id, policy = result
        log.warning("alert.raised", rule_id=fired.rule.rule_id, alert_id=str(alert_id))
        if policy is not None:
            await self._state.publish_policy(policy)
        return True

    async def page(
        self, *, status: str, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[Alert]:
        return await alert_store.list_alerts(self._pool, status=status, limit=limit, after=after)

    async def update(self, alert_id: uuid.UUID, *, status: str, note: str | None) -> Alert:
        alert = await alert_store.update_alert(self._pool, alert_id, status=status, note=note)
        if alert is None:
            raise NotFound("ALERT_NOT_FOUND", "no such alert")
        return alert
