"""Aggregate alerts: raised with evidence, announced to operators through the outbox,
optionally flipping a kill switch as "risk:auto"."""

from __future__ import annotations

import asyncio
import json
import uuid

from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

TIMEOUT = 10.0
FAST = {"RISK_ALERT_INTERVAL_SECONDS": "0.2"}


async def fail_logins(risk, count: int) -> None:
    for n in range(count):
        client = common_pb2.ClientContext(ip_address=f"100.70.{n}.1", device_id="d")
        await risk.RecordOutcome(
            risk_pb2.RecordOutcomeRequest(
                outcome=risk_pb2.OUTCOME_PASSWORD_WRONG, identifier_hash=f"h{n}", client=client
            ),
            timeout=TIMEOUT,
        )


async def wait_for_alerts(operator) -> list[risk_pb2.Alert]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            alerts = (
                await operator.ListAlerts(risk_pb2.ListAlertsRequest(), timeout=TIMEOUT)
            ).alerts
            if alerts:
                return list(alerts)
            await asyncio.sleep(0.1)


async def test_a_stuffing_wave_raises_one_alert_that_suspends_registration_as_risk_auto(cluster):
    await cluster.start("risk", env=FAST)
    operator = cluster.stub("risk")
    await operator.UpdateRule(
        risk_pb2.UpdateRuleRequest(
            rule_id="alert.stuffing_wave", thresholds={"min_failures": 20},
            auto_action="registration_suspended", reason="drill",
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    await fail_logins(cluster.stub("risk", as_="identity"), 25)
    alerts = await wait_for_alerts(operator)
    await asyncio.sleep(0.5)  # further passes must not raise the same wave again
    alerts = list((await operator.ListAlerts(risk_pb2.ListAlertsRequest(), timeout=TIMEOUT)).alerts)
    assert [a.rule_id for a in alerts] == ["alert.stuffing_wave"]
    alert = alerts[0]
    assert alert.status == risk_pb2.ALERT_STATUS_OPEN
    assert json.loads(alert.evidence_json)["failed_sign_ins"] >= 20
    assert json.loads(alert.auto_action_taken) == {
        "switch": "registration_suspended",
        "value": True,
    }
    policy = (await operator.GetPolicies(risk_pb2.GetPoliciesRequest(), timeout=TIMEOUT)).policy
    assert policy.registration_suspended
    change = (
        await operator.ListPolicyChanges(risk_pb2.ListPolicyChangesRequest(), timeout=TIMEOUT)
    ).changes[0]
    assert change.actor == "risk:auto"
    assert alert.alert_id in change.reason

    async with cluster.running["risk"].pool.acquire() as conn:
        notice = await conn.fetchrow("select topic, idempotency_key, payload from outbox")
    assert notice["topic"] == "notify.send_operator_alert"
    assert notice["payload"]["alert_id"] == alert.alert_id
    assert notice["payload"]["severity"] == "SEVERITY_CRITICAL"

    acknowledged = await operator.UpdateAlert(
        risk_pb2.UpdateAlertRequest(
            alert_id=alert.alert_id, status=risk_pb2.ALERT_STATUS_ACKNOWLEDGED, note="on it"
        ),
        timeout=TIMEOUT,
    )
    assert acknowledged.alert.status == risk_pb2.ALERT_STATUS_ACKNOWLEDGED


async def test_an_alert_rule_below_its_threshold_raises_nothing(cluster):
    await cluster.start("risk", env=FAST)
    operator = cluster.stub("risk")
    await fail_logins(cluster.stub("risk", as_="identity"), 25)
    await asyncio.sleep(1.0)
    alerts = (await operator.ListAlerts(risk_pb2.ListAlertsRequest(), timeout=TIMEOUT)).alerts
    assert list(alerts) == []


async def test_operators_are_notified_of_an_alert_through_notify(cluster):
    await cluster.start("notify")
    await cluster.start("risk", env=FAST)
    operator = cluster.stub("risk")
    await operator.UpdateRule(
        risk_pb2.UpdateRuleRequest(
            rule_id="alert.stuffing_wave", thresholds={"min_failures": 5}, reason="drill"
        ),
        timeout=TIMEOUT,
    )
    await fail_logins(cluster.stub("risk", as_="identity"), 5)
    alert = (await wait_for_alerts(operator))[0]
    async with asyncio.timeout(TIMEOUT):
        while True:
            async with cluster.running["risk"].pool.acquire() as conn:
                state = await conn.fetchval(
                    "select state from outbox where idempotency_key = $1",
                    f"risk-alert:{uuid.UUID(alert.alert_id)}",
                )
            if state == "delivered":
                break
            await asyncio.sleep(0.1)
