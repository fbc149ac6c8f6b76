"""Kill switches: set with a reason, audited, streamed to every follower within seconds,
kept by followers while risk is away."""

from __future__ import annotations

import asyncio
import contextlib
import json

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

from services.risk.bootstrap import MIGRATIONS, build
from services.risk.settings import RiskSettings
from services.runtime.config import load_settings
from services.runtime.peers import PolicyView, follow_policies
from services.runtime.server import start_service
from services.runtime.tls import load_tls, secure_channel

TIMEOUT = 10.0
WALLET = "0190f5a4-0000-7000-8000-000000000001"


def suspend_card(reason: str = "card testing wave") -> risk_pb2.SetPolicyRequest:
    return risk_pb2.SetPolicyRequest(
        top_up_channel=risk_pb2.TopUpChannelChange(
            channel=risk_pb2.TOP_UP_CHANNEL_CARD, suspended=True
        ),
        reason=reason,
    )


def card_top_up() -> risk_pb2.AssessTopUpRequest:
    return risk_pb2.AssessTopUpRequest(
        wallet_id=WALLET,
        payer_id="payer-1",
        amount=common_pb2.Money(amount_minor=3000, currency="JPY"),
        channel=risk_pb2.TOP_UP_CHANNEL_CARD,
        session_id="session-1",
        client=common_pb2.ClientContext(ip_address="133.1.2.3", device_id="device-1"),
    )


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None

    fields = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


@contextlib.asynccontextmanager
async def follower(channel: grpc.aio.Channel, view: PolicyView):
    stop = asyncio.Event()
    task = asyncio.create_task(follow_policies(channel, view, subscriber="wallet-test")(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


async def test_set_policy_without_a_reason_is_refused_and_changes_nothing(cluster):
    await cluster.start("risk")
    risk = cluster.stub("risk")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await risk.SetPolicy(suspend_card(reason="  "), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == ["reason"]
    policy = (await risk.GetPolicies(risk_pb2.GetPoliciesRequest(), timeout=TIMEOUT)).policy
    assert policy.version == 0
    assert list(policy.top_up_suspended_channels) == []


async def test_set_policy_records_who_when_and_why(cluster):
    await cluster.start("risk")
    risk = cluster.stub("risk")
    reply = await risk.SetPolicy(
        risk_pb2.SetPolicyRequest(
            country=risk_pb2.CountryChange(country_code="KP", blocked=True),
            reason="foreign IP surge",
        ),
        metadata=(("x-operator", "aiko"),),
        timeout=TIMEOUT,
    )
    assert reply.policy.version == 1
    assert list(reply.policy.blocked_countries) == ["KP"]
    changes = (
        await risk.ListPolicyChanges(risk_pb2.ListPolicyChangesRequest(), timeout=TIMEOUT)
    ).changes
    assert [(c.actor, c.reason, c.policy_version) for c in changes] == [
        ("operator:aiko", "foreign IP surge", 1)
    ]
    assert json.loads(changes[0].change_json) == {
        "policy": {"switch": "country", "key": "KP", "value": True}
    }
    assert changes[0].changed_at.seconds > 0


async def test_only_operators_may_set_policies(cluster):
    await cluster.start("risk")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cluster.stub("risk", as_="wallet").SetPolicy(suspend_card(), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_card_top_up_suspension_reaches_a_follower_within_2_seconds_and_refuses_card(
    cluster,
):
    await cluster.start("risk")
    view = PolicyView()
    async with follower(cluster.channel("risk", as_="wallet"), view):
        await view.wait_for_version(0, timeout=TIMEOUT)
        changed = await cluster.stub("risk").SetPolicy(suspend_card(), timeout=TIMEOUT)
        applied = await view.wait_for_version(changed.policy.version, timeout=2.0)
    assert risk_pb2.TOP_UP_CHANNEL_CARD in applied.top_up_suspended_channels
    decision = (
        await cluster.stub("risk", as_="wallet").AssessTopUp(card_top_up(), timeout=TIMEOUT)
    ).decision
    assert decision.verdict == risk_pb2.VERDICT_DENY
    assert [r.rule_id for r in decision.reasons] == ["top_up.channel_suspended"]


async def test_a_change_made_through_one_replica_reaches_followers_of_another(cluster, tmp_path):
    await cluster.start("risk")
    settings = load_settings(
        RiskSettings,
        {
            "DATABASE_URL": cluster.database_urls["risk"],
            "MAMORU_TLS_DIR": str(cluster.tls_dir),
            "RISK_GRPC_PORT": "0",
            "RISK_HEALTH_PORT": "0",
            "RISK_METRICS_PORT": "0",
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
        },
    )
    second = await start_service("risk", settings, MIGRATIONS, build)
    channel = secure_channel(
        f"127.0.0.1:{second.grpc_port}", load_tls(cluster.tls_dir, "wallet"), server_name="risk"
    )
    try:
        view = PolicyView()
        async with follower(channel, view):
            await view.wait_for_version(0, timeout=TIMEOUT)
            changed = await cluster.stub("risk").SetPolicy(
                risk_pb2.SetPolicyRequest(payments_suspended=True, reason="spend spike"),
                timeout=TIMEOUT,
            )
            applied = await view.wait_for_version(changed.policy.version, timeout=2.0)
        assert applied.payments_suspended
        decision = (
            await risk_pb2_grpc.RiskServiceStub(channel).AssessPayment(
                risk_pb2.AssessPaymentRequest(
                    wallet_id=WALLET,
                    payer_id="payer-1",
                    amount=common_pb2.Money(amount_minor=500, currency="JPY"),
                    merchant_id="merchant-1",
                    merchant_category="5411",
                ),
                timeout=TIMEOUT,
            )
        ).decision
        assert decision.verdict == risk_pb2.VERDICT_DENY
        assert [r.rule_id for r in decision.reasons] == ["payment.suspended"]
    finally:
        await channel.close()
        await second.stop(grace=1.0)


async def test_followers_keep_the_last_policy_while_risk_is_stopped_and_catch_up_after(cluster):
    await cluster.start("risk")
    risk = cluster.stub("risk")
    first = await risk.SetPolicy(
        risk_pb2.SetPolicyRequest(registration_suspended=True, reason="sign-up abuse"),
        timeout=TIMEOUT,
    )
    view = PolicyView()
    async with follower(cluster.channel("risk", as_="identity"), view):
        await view.wait_for_version(first.policy.version, timeout=TIMEOUT)
        await cluster.stop("risk")
        await asyncio.sleep(0.5)
        assert view.policy is not None
        assert view.policy.registration_suspended
        await cluster.start("risk")
        second = await cluster.stub("risk").SetPolicy(
            risk_pb2.SetPolicyRequest(wind_down=True, reason="winding down"), timeout=TIMEOUT
        )
        applied = await view.wait_for_version(second.policy.version, timeout=TIMEOUT)
    assert applied.registration_suspended and applied.wind_down
