"""Alerts on PostgreSQL: the aggregates the rules watch, one alert per quiet period,
stored with its operator notice and automatic switch in one transaction."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from services.risk.clients.notify import OPERATOR_ALERT, alert_notice
from services.risk.domain.alerts import ALERT_RULES
from services.risk.domain.decisions import StoredDecision
from services.risk.domain.outcomes import OutcomeEvent
from services.risk.domain.policy import PolicyChange
from services.risk.domain.rules import RuleBook, Verdict
from services.risk.domain.tallies import Batch, CellDelta
from services.risk.domain.windows import bucket_of
from services.risk.storage import alerts, counters, decisions, outcomes


async def raise_stuffing_alert(pool, *, quiet_since: datetime, action: PolicyChange | None = None):
    return await alerts.raise_alert(
        pool, rule_id="alert.stuffing_wave", evidence={"failed_sign_ins": 1200.0},
        quiet_since=quiet_since, auto_action=action,
        notice=alert_notice("wave", {"failed_sign_ins": 1200.0}),
    )  # fmt: skip


async def test_aggregates_read_failures_foreign_sign_ins_top_ups_and_risky_baskets(pool):
    now = datetime.now(UTC)
    failed = CellDelta("global", "", bucket_of(now), attempts=1, failures=1, unknown=0)
    await counters.add_counts(pool, Batch(cells=(failed,), identifiers=()))
    await outcomes.record_outcome(
        pool,
        OutcomeEvent(
            outcome="top_up_completed", decision_id="", account_id="", wallet_id="w-1",
            payer_id="p", session_id="", ip="", device_id="", amount_minor=7000,
            currency="JPY", movement_id="m-1", identifier_hash="", occurred_at=now,
        ),
    )  # fmt: skip

    def decided(kind: str, country: str, inputs: dict[str, object]) -> StoredDecision:
        return StoredDecision(
            decision_id=uuid.uuid4(), kind=kind, verdict=Verdict.ALLOW, score=0, reasons=(),
            inputs=inputs, country_code=country, account_id="", ip="", decided_at=now,
        )  # fmt: skip

    await decisions.insert_decisions(
        pool,
        [
            decided("login", "US", {}),
            decided("login", "JP", {}),
            decided("payment", "", {"basket": ["tobacco"]}),
            decided("payment", "", {"basket": ["food"]}),
        ],
    )
    rules = RuleBook()
    windows = {rule_id: rules.window(rule_id) for rule_id in ALERT_RULES}
    assert await alerts.alert_aggregates(
        pool, now=now, windows=windows, home_countries=("JP",)
    ) == {
        "failed_sign_ins": 1.0, "foreign_sign_in_attempts": 1.0,
        "top_up_amount_minor": 7000.0, "high_risk_payments": 1.0,
    }  # fmt: skip


async def test_an_alert_is_stored_with_its_notice_and_not_raised_again_while_open(pool):
    quiet_since = datetime.now(UTC) - timedelta(minutes=10)
    raised = await raise_stuffing_alert(pool, quiet_since=quiet_since)
    assert raised is not None
    alert_id, policy = raised
    assert policy is None
    assert await raise_stuffing_alert(pool, quiet_since=quiet_since) is None
    [alert] = await alerts.list_alerts(pool, status="open", limit=10, after=None)
    assert (alert.alert_id, alert.rule_id, alert.auto_action_taken) == (
        alert_id, "alert.stuffing_wave", "",
    )  # fmt: skip
    notice = await pool.fetchrow("select topic, payload from outbox")
    assert notice["topic"] == OPERATOR_ALERT.name
    assert notice["payload"]["alert_id"] == str(alert_id)
    assert notice["payload"]["idempotency_key"] == f"risk-alert:{alert_id}"


async def test_a_resolved_alert_lets_the_rule_raise_again(pool):
    quiet_since = datetime.now(UTC) - timedelta(minutes=10)
    raised = await raise_stuffing_alert(pool, quiet_since=quiet_since)
    assert raised is not None
    resolved = await alerts.update_alert(pool, raised[0], status="resolved", note="sre-1: done")
    assert resolved is not None and resolved.status == "resolved"
    assert await raise_stuffing_alert(pool, quiet_since=quiet_since) is not None
    assert await alerts.list_alerts(pool, status="resolved", limit=10, after=None) == [resolved]


async def test_an_automatic_switch_changes_the_policy_in_the_same_transaction(pool):
    raised = await raise_stuffing_alert(
        pool,
        quiet_since=datetime.now(UTC),
        action=PolicyChange("top_up_channel", True, key="card"),
    )
    assert raised is not None
    _, policy = raised
    assert policy is not None and policy.top_up_suspended_channels == frozenset({"card"})
    [alert] = await alerts.list_alerts(pool, status="", limit=10, after=None)
    assert '"top_up_channel"' in alert.auto_action_taken
    assert await pool.fetchval("select actor from policy_changes") == "risk:auto"


async def test_replicas_evaluating_at_once_raise_one_alert(pool):
    quiet_since = datetime.now(UTC) - timedelta(minutes=10)
    results = await asyncio.gather(
        *(raise_stuffing_alert(pool, quiet_since=quiet_since) for _ in range(6))
    )
    assert sum(result is not None for result in results) == 1
    assert await pool.fetchval("select count(*) from alerts") == 1


async def test_updating_an_unknown_alert_finds_nothing(pool):
    assert await alerts.update_alert(pool, uuid.uuid4(), status="resolved", note=None) is None
