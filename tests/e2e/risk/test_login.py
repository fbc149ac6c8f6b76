"""Credential-stuffing detection over real servers: per-IP and global signals,
run-time thresholds, and decisions stored with their reasons."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

TIMEOUT = 10.0


def identifier(n: int | str) -> str:
    return hashlib.sha256(f"person-{n}@example.jp".encode()).hexdigest()


def login(
    *, ip: str, account_id: str = "", ident: str = "", known_device: bool = False,
    device: str = "attacker-device", method: str = "password",
) -> risk_pb2.AssessLoginRequest:  # fmt: skip
    return risk_pb2.AssessLoginRequest(
        account_id=account_id,
        identifier_hash=ident,
        client=common_pb2.ClientContext(ip_address=ip, device_id=device),
        known_device=known_device,
        method=method,
    )


def wrong_password(request: risk_pb2.AssessLoginRequest, decision_id: str):
    return risk_pb2.RecordOutcomeRequest(
        decision_id=decision_id,
        outcome=risk_pb2.OUTCOME_PASSWORD_WRONG,
        account_id=request.account_id,
        identifier_hash=request.identifier_hash,
        client=request.client,
    )


async def attempt_and_fail(risk, request) -> risk_pb2.Decision:
    """What identity does: assess, and report the wrong password unless refused outright."""
    decision: risk_pb2.Decision = (await risk.AssessLogin(request, timeout=TIMEOUT)).decision
    if decision.verdict != risk_pb2.VERDICT_THROTTLE:
        await risk.RecordOutcome(wrong_password(request, decision.decision_id), timeout=TIMEOUT)
    return decision


async def test_fifty_logins_from_one_ip_are_throttled_while_owners_still_sign_in(cluster):
    await cluster.start("risk")
    risk = cluster.stub("risk", as_="identity")
    accounts = [str(uuid.uuid4()) for _ in range(50)]
    verdicts = []
    for n, account in enumerate(accounts):
        request = login(ip="203.0.113.7", account_id=account, ident=identifier(n))
        verdicts.append((await attempt_and_fail(risk, request)).verdict)
    assert verdicts[:5] == [risk_pb2.VERDICT_ALLOW] * 5
    assert verdicts[-40:] == [risk_pb2.VERDICT_THROTTLE] * 40

    for n, account in enumerate(accounts[:10]):
        owner = login(
            ip=f"133.{n}.10.20", account_id=account, ident=identifier(n), known_device=True,
            device=f"phone-{n}",
        )  # fmt: skip
        decision = (await risk.AssessLogin(owner, timeout=TIMEOUT)).decision
        assert decision.verdict == risk_pb2.VERDICT_ALLOW, decision


async def test_list_replay_over_500_ips_under_the_per_ip_limit_is_answered_with_challenge(cluster):
    await cluster.start("risk")
    risk = cluster.stub("risk", as_="identity")
    ips = [f"100.{64 + n // 200}.{n % 200}.9" for n in range(500)]

    async def replay(n: int) -> risk_pb2.Decision:
        # A fresh device per attempt too, or one device would cross its own limit.
        request = login(ip=ips[n], ident=identifier(f"leak-{n}"), device=f"bot-{n}")
        return await attempt_and_fail(risk, request)

    verdicts = []
    for start in range(0, 500, 50):
        batch = await asyncio.gather(*(replay(n) for n in range(start, start + 50)))
        verdicts += [d.verdict for d in batch]
    assert risk_pb2.VERDICT_THROTTLE not in verdicts, "no single IP crossed a per-IP limit"
    assert verdicts[-100:] == [risk_pb2.VERDICT_CHALLENGE] * 100

    bystander = login(
        ip="133.5.6.7", account_id=str(uuid.uuid4()), ident=identifier("owner"),
        known_device=True, device="owner-phone",
    )  # fmt: skip
    decision = (await risk.AssessLogin(bystander, timeout=TIMEOUT)).decision
    assert decision.verdict == risk_pb2.VERDICT_CHALLENGE
    fired = {r.rule_id: r for r in decision.reasons}
    assert set(fired) == {"login.global_failures", "login.unknown_identifier_share"}
    assert fired["login.global_failures"].observed >= 500
    assert fired["login.global_failures"].threshold == 300

    passkey = login(ip="133.5.6.8", account_id=str(uuid.uuid4()), method="passkey",
                    known_device=True)  # fmt: skip
    assert (await risk.AssessLogin(passkey, timeout=TIMEOUT)).decision.verdict == (
        risk_pb2.VERDICT_ALLOW
    )


async def test_an_operator_lowers_a_threshold_at_run_time_and_the_change_is_audited(cluster):
    await cluster.start("risk")
    operator = cluster.stub("risk")
    risk = cluster.stub("risk", as_="identity")
    account = str(uuid.uuid4())
    updated = await operator.UpdateRule(
        risk_pb2.UpdateRuleRequest(
            rule_id="login.ip_failures", thresholds={"max_failures": 3}, reason="drill"
        ),
        metadata=(("x-operator", "ken"),),
        timeout=TIMEOUT,
    )
    assert updated.rule.thresholds["max_failures"] == 3
    assert updated.rule.thresholds["window_seconds"] == 300
    verdicts = [
        (await attempt_and_fail(risk, login(ip="198.51.100.4", account_id=account))).verdict
        for _ in range(4)
    ]
    assert verdicts == [risk_pb2.VERDICT_ALLOW] * 3 + [risk_pb2.VERDICT_THROTTLE]
    change = (
        await operator.ListPolicyChanges(risk_pb2.ListPolicyChangesRequest(), timeout=TIMEOUT)
    ).changes[0]
    assert (change.actor, change.reason, change.policy_version) == ("operator:ken", "drill", 0)
    assert json.loads(change.change_json) == {
        "rule": "login.ip_failures",
        "thresholds": {"max_failures": 3.0},
    }


async def test_every_stored_decision_shows_the_reasons_and_inputs_it_was_given_with(cluster):
    await cluster.start("risk")
    risk = cluster.stub("risk", as_="identity")
    await cluster.stub("risk").SetPolicy(
        risk_pb2.SetPolicyRequest(
            country=risk_pb2.CountryChange(country_code="US", blocked=True), reason="drill"
        ),
        timeout=TIMEOUT,
    )
    given = {}
    for ip in ("8.8.8.8", "133.1.2.3", "8.8.4.4"):
        decision = (
            await risk.AssessLogin(login(ip=ip, account_id=str(uuid.uuid4())), timeout=TIMEOUT)
        ).decision
        given[decision.decision_id] = decision
    stored = (
        await cluster.stub("risk").ListDecisions(risk_pb2.ListDecisionsRequest(), timeout=TIMEOUT)
    ).decisions
    assert {row.decision.decision_id for row in stored} == set(given)
    for row in stored:
        assert row.kind == "login"
        assert row.decision == given[row.decision.decision_id]
        assert row.decision.reasons, "every one of these decisions had a rule fire"
        assert json.loads(row.inputs_json)["signals"]["ip_failures"] == 0
    blocked = [row.decision for row in stored if row.decision.country_code == "US"]
    assert len(blocked) == 2
    assert all(d.verdict == risk_pb2.VERDICT_DENY for d in blocked)
    assert all("login.blocked_country" in {r.rule_id for r in d.reasons} for d in blocked)
