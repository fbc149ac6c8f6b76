"""Blocked networks and risk's own containment of a stuffing wave, over real servers:
an operator blocks a network, risk contains a wave's networks by itself, and an
operator lifts it; every change is a policy version followers receive."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import pytest
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

from services.runtime.peers import PolicyView
from tests.e2e.risk.test_policies import field_violations, follower

TIMEOUT = 10.0
# The watch every fifth of a second; the long window's count sized so that the wave's
# alert does not depend on how fast this machine reports failures.
WATCH = {"RISK_STUFFING_WATCH_SECONDS": "0.2"}
WALLET = "0190f5a4-0000-7000-8000-000000000001"


def sign_in(ip: str, *, known_device: bool = False, method: str = "password", account: str = ""):
    return risk_pb2.AssessLoginRequest(
        account_id=account or str(uuid.uuid4()),
        identifier_hash="" if account else "h",
        client=common_pb2.ClientContext(ip_address=ip, device_id="phone"),
        known_device=known_device,
        method=method,
    )


def block(network: str, blocked: bool = True, reason: str = "stuffing from a rented block"):
    return risk_pb2.SetPolicyRequest(
        network=risk_pb2.NetworkChange(network=network, blocked=blocked), reason=reason
    )


async def verdict_of(risk, request) -> tuple[int, list[str]]:
    decision = (await risk.AssessLogin(request, timeout=TIMEOUT)).decision
    return decision.verdict, [r.rule_id for r in decision.reasons]


async def fail_from(risk, ips: list[str]) -> None:
    for ip in ips:
        await risk.RecordOutcome(
            risk_pb2.RecordOutcomeRequest(
                outcome=risk_pb2.OUTCOME_PASSWORD_WRONG, identifier_hash=f"h-{ip}",
                client=common_pb2.ClientContext(ip_address=ip, device_id="bot"),
            ),
            timeout=TIMEOUT,
        )  # fmt: skip


async def tune_stuffing(operator, **thresholds: float) -> None:
    await operator.UpdateRule(
        risk_pb2.UpdateRuleRequest(
            rule_id="alert.stuffing_wave", thresholds=thresholds, reason="sized for the test"
        ),
        timeout=TIMEOUT,
    )


async def policy_where(operator, holds, what: str) -> risk_pb2.Policy:
    try:
        async with asyncio.timeout(30):
            while True:
                reply = await operator.GetPolicies(risk_pb2.GetPoliciesRequest(), timeout=TIMEOUT)
                policy: risk_pb2.Policy = reply.policy
                if holds(policy):
                    return policy
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"the policy never came to {what}") from None


async def test_a_blocked_network_refuses_sign_in_sign_up_and_top_up_and_the_change_is_audited(
    cluster,
):
    await cluster.start("risk")
    operator = cluster.stub("risk")
    identity = cluster.stub("risk", as_="identity")
    wallet = cluster.stub("risk", as_="wallet")
    reply = await operator.SetPolicy(
        block("2001:DB8:ABCD::/48"), metadata=(("x-operator", "aiko"),), timeout=TIMEOUT
    )
    await operator.SetPolicy(block("203.0.113.0/24"), timeout=TIMEOUT)
    policy = (await operator.GetPolicies(risk_pb2.GetPoliciesRequest(), timeout=TIMEOUT)).policy
    assert list(policy.blocked_networks) == ["2001:db8:abcd::/48", "203.0.113.0/24"]
    assert list(reply.policy.blocked_networks) == ["2001:db8:abcd::/48"]

    for ip in ("203.0.113.9", "2001:db8:abcd:1::9", "::ffff:203.0.113.9"):
        assert await verdict_of(identity, sign_in(ip, known_device=True)) == (
            risk_pb2.VERDICT_DENY, ["policy.blocked_network"],
        )  # fmt: skip
    registration = await identity.AssessRegistration(
        risk_pb2.AssessRegistrationRequest(
            email_domain="example.jp",
            client=common_pb2.ClientContext(ip_address="203.0.113.9", device_id="phone"),
        ),
        timeout=TIMEOUT,
    )
    assert registration.decision.verdict == risk_pb2.VERDICT_DENY
    top_up = await wallet.AssessTopUp(
        risk_pb2.AssessTopUpRequest(
            wallet_id=WALLET, payer_id="payer-1", channel=risk_pb2.TOP_UP_CHANNEL_CARD,
            amount=common_pb2.Money(amount_minor=3000, currency="JPY"), session_id="s-1",
            client=common_pb2.ClientContext(ip_address="203.0.113.9", device_id="phone"),
        ),
        timeout=TIMEOUT,
    )  # fmt: skip
    assert [r.rule_id for r in top_up.decision.reasons] == ["policy.blocked_network"]
    assert (await verdict_of(identity, sign_in("203.0.114.9")))[0] == risk_pb2.VERDICT_ALLOW

    await operator.SetPolicy(block("203.0.113.0/24", False, "wrong block"), timeout=TIMEOUT)
    assert (await verdict_of(identity, sign_in("203.0.113.9")))[0] == risk_pb2.VERDICT_ALLOW
    changes = (
        await operator.ListPolicyChanges(risk_pb2.ListPolicyChangesRequest(), timeout=TIMEOUT)
    ).changes
    assert [(c.actor, c.reason, json.loads(c.change_json)) for c in changes] == [
        ("operator", "wrong block",
         {"policy": {"switch": "network", "key": "203.0.113.0/24", "value": False}}),
        ("operator", "stuffing from a rented block",
         {"policy": {"switch": "network", "key": "203.0.113.0/24", "value": True}}),
        ("operator:aiko", "stuffing from a rented block",
         {"policy": {"switch": "network", "key": "2001:db8:abcd::/48", "value": True}}),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "network", ["203.0.113.7/24", "203.0.113.0", "example.jp", "0.0.0.0/0", "203.0.113.0/33"]
)
async def test_a_network_that_is_not_a_narrow_cidr_is_refused_naming_the_field(cluster, network):
    await cluster.start("risk")
    operator = cluster.stub("risk")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await operator.SetPolicy(block(network), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == ["network.network"]
    policy = (await operator.GetPolicies(risk_pb2.GetPoliciesRequest(), timeout=TIMEOUT)).policy
    assert (policy.version, list(policy.blocked_networks)) == (0, [])


async def test_a_wave_contains_its_networks_for_new_devices_until_an_operator_lifts_it(cluster):
    await cluster.start("risk", env=WATCH)
    operator = cluster.stub("risk")
    identity = cluster.stub("risk", as_="identity")
    await tune_stuffing(operator, min_failures=12)
    # Three failures from each of four networks: a wave, and every network in it qualifies.
    await fail_from(identity, [f"198.51.{n}.{k}" for n in range(100, 104) for k in (7, 8, 9)])
    policy = await policy_where(operator, lambda p: len(p.contained_networks) == 4, "contain")
    assert list(policy.contained_networks) == [f"198.51.{n}.0/24" for n in range(100, 104)]
    [alert] = (await operator.ListAlerts(risk_pb2.ListAlertsRequest(), timeout=TIMEOUT)).alerts
    assert policy.containment_alert_id == alert.alert_id
    assert policy.containment_until.seconds > policy.updated_at.seconds
    taken = json.loads(alert.auto_action_taken)["containment"]
    assert taken["contained_networks"] == 4
    [change] = (
        await operator.ListPolicyChanges(risk_pb2.ListPolicyChangesRequest(), timeout=TIMEOUT)
    ).changes[:1]
    assert (change.actor, change.policy_version) == ("risk:auto", policy.version)
    assert alert.alert_id in change.reason

    contained_ip = "198.51.101.200"
    verdict, reasons = await verdict_of(identity, sign_in(contained_ip))
    assert (verdict, reasons) == (
        risk_pb2.VERDICT_THROTTLE, ["login.new_device", "login.contained_network"],
    )  # fmt: skip
    decision = (await identity.AssessLogin(sign_in(contained_ip), timeout=TIMEOUT)).decision
    assert decision.reasons[-1].detail == (
        f"network 198.51.101.0/24 contained for alert {alert.alert_id}"
    )
    owner = str(uuid.uuid4())
    assert (await verdict_of(identity, sign_in(contained_ip, account=owner, known_device=True)))[
        0
    ] == risk_pb2.VERDICT_ALLOW
    assert (
        "login.contained_network"
        not in (await verdict_of(identity, sign_in(contained_ip, method="passkey")))[1]
    )

    lifted = await operator.SetPolicy(
        risk_pb2.SetPolicyRequest(lift_containment=True, reason="a carrier's NAT"),
        metadata=(("x-operator", "aiko"),),
        timeout=TIMEOUT,
    )
    assert (list(lifted.policy.contained_networks), lifted.policy.containment_alert_id) == ([], "")
    assert not lifted.policy.HasField("containment_until")
    assert (await verdict_of(identity, sign_in(contained_ip)))[0] == risk_pb2.VERDICT_ALLOW
    [change] = (
        await operator.ListPolicyChanges(risk_pb2.ListPolicyChangesRequest(), timeout=TIMEOUT)
    ).changes[:1]
    assert (change.actor, change.reason) == ("operator:aiko", "a carrier's NAT")
    assert json.loads(change.change_json)["policy"]["alert_id"] == alert.alert_id


async def test_a_follower_receives_a_containment_of_three_hundred_networks(cluster):
    await cluster.start("risk", env=WATCH)
    operator = cluster.stub("risk")
    await tune_stuffing(operator, min_failures=300, contain_min_failures=1)
    view = PolicyView()
    async with follower(cluster.channel("risk", as_="identity"), view):
        await view.wait_for_version(0, timeout=TIMEOUT)
        await fail_from(
            cluster.stub("risk", as_="identity"),
            [f"100.{64 + n // 250}.{n % 250}.7" for n in range(300)],
        )
        policy = await policy_where(
            operator, lambda p: len(p.contained_networks) == 300, "contain 300 networks"
        )
        applied = await view.wait_for_version(policy.version, timeout=TIMEOUT)
    assert sorted(applied.contained_networks) == sorted(policy.contained_networks)
    assert applied.containment_alert_id == policy.containment_alert_id
    assert policy.ByteSize() < 10_000
