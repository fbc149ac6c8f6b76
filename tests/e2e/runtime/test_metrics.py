"""Every service answers /metrics with the series SREs alert on, from real calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import aiohttp
import grpc
import pytest
from mamoru.identity.v1 import identity_pb2 as pb
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.identity.conftest import IDENTITY_ENV
from tests.harness import Cluster
from tests.support.identity_driver import IdentityDriver
from tests.support.people import client

TIMEOUT = 15.0
WAIT_SECONDS = 30.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = await reply.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum of ``name``'s samples whose labels include ``labels``; None when none."""
    found = [
        v
        for (sample, have), v in samples.items()
        if sample == name and set(labels.items()) <= set(have)
    ]
    return sum(found) if found else None


async def scrape_until(
    url: str, ready: Callable[[Samples], bool], what: str, within: float = WAIT_SECONDS
) -> Samples:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        samples = await scrape(url)
        if ready(samples):
            return samples
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{url} never showed {what}; it shows {sorted(samples)[:60]}")
        await asyncio.sleep(0.2)


def has(name: str, **labels: str) -> Callable[[Samples], bool]:
    return lambda samples: value(samples, name, **labels) is not None


def all_of(*checks: Callable[[Samples], bool]) -> Callable[[Samples], bool]:
    return lambda samples: all(check(samples) for check in checks)


EVERY_SERVICE = ("identity", "wallet", "risk", "notify")
OWN_SERIES: Mapping[str, tuple[tuple[str, dict[str, str]], ...]] = {
    "identity": (
        ("mamoru_identity_password_hashes_total", {}),
        ("mamoru_identity_password_hashes_in_flight", {}),
        ("mamoru_identity_refused_without_hash_total", {}),
        ("mamoru_kill_switch", {"switch": "payments"}),
    ),
    "wallet": (("mamoru_kill_switch", {"switch": "top_up_card"}),),
    "risk": (
        ("mamoru_risk_decisions_total", {"assessment": "login"}),
        ("mamoru_risk_decisions_total", {"assessment": "registration"}),
        ("mamoru_risk_stuffing_signal", {}),
        ("mamoru_kill_switch", {"switch": "registration"}),
    ),
    "notify": (
        ("mamoru_notify_delivery_lag_seconds", {}),
        ("mamoru_notify_retries_total", {}),
        ("mamoru_notify_dead_letters_total", {}),
    ),
}


@pytest.mark.slow
async def test_every_service_answers_metrics_with_its_series_after_some_calls(
    cluster: Cluster,
) -> None:
    await cluster.start("risk", "identity", "notify", "wallet", env=IDENTITY_ENV)
    people = IdentityDriver(cluster.stub("identity", as_="gateway"), cluster.smtp)
    person = await people.register("metrics@example.test")
    wrong = pb.LoginRequest(identifier=person.email, password="not the password", client=client())
    with pytest.raises(grpc.aio.AioRpcError):
        await cluster.stub("identity", as_="gateway").Login(wrong, timeout=TIMEOUT)
    reconciled = await cluster.stub("wallet").Reconcile(
        wallet_pb2.ReconcileRequest(), timeout=TIMEOUT
    )
    assert reconciled.balanced

    for name in EVERY_SERVICE:
        samples = await scrape_until(
            cluster.metrics_url(name),
            all_of(
                has("mamoru_rpc_requests_total", service=name, code="OK"),
                has("mamoru_rpc_duration_seconds_count", service=name),
                has("mamoru_db_pool_connections", service=name, state="in_use"),
                has("mamoru_db_pool_connections", service=name, state="max"),
                has("mamoru_outbox_backlog", service=name),
                has("mamoru_outbox_oldest_age_seconds", service=name),
                *(has(series, **labels) for series, labels in OWN_SERIES[name]),
            ),
            f"the series of {name}",
        )
        assert (value(samples, "mamoru_db_pool_connections", service=name, state="max") or 0) > 0
    identity = await scrape(cluster.metrics_url("identity"))
    # Registration hashed the password; the wrong one was verified.
    assert (value(identity, "mamoru_identity_password_hashes_total") or 0) >= 2
    risk = await scrape_until(
        cluster.metrics_url("risk"),
        lambda s: (value(s, "mamoru_risk_stuffing_signal") or 0) >= 1,
        "the failed sign-in in the stuffing signal",
    )
    assert (value(risk, "mamoru_risk_decisions_total", assessment="login") or 0) >= 1


async def test_rpcs_are_counted_by_method_and_final_code(cluster: Cluster) -> None:
    await cluster.start("risk")
    risk = cluster.stub("risk")
    url = cluster.metrics_url("risk")
    get = "/mamoru.risk.v1.RiskService/GetPolicies"
    set_ = "/mamoru.risk.v1.RiskService/SetPolicy"
    before = await scrape(url)
    for _ in range(3):
        await risk.GetPolicies(risk_pb2.GetPoliciesRequest(), timeout=TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await risk.SetPolicy(risk_pb2.SetPolicyRequest(reason="nothing to change"), timeout=TIMEOUT)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    await risk.SetPolicy(
        risk_pb2.SetPolicyRequest(registration_suspended=True, reason="metrics test"),
        timeout=TIMEOUT,
    )
    after = await scrape(url)

    def grew(method: str, code: str) -> float:
        labels = {"service": "risk", "method": method, "code": code}
        return (value(after, "mamoru_rpc_requests_total", **labels) or 0) - (
            value(before, "mamoru_rpc_requests_total", **labels) or 0
        )

    assert grew(get, "OK") == 3
    assert grew(set_, "INVALID_ARGUMENT") == 1
    assert grew(set_, "OK") == 1
    count = value(after, "mamoru_rpc_duration_seconds_count", service="risk", method=get) or 0
    assert count >= 3
    assert value(after, "mamoru_kill_switch", switch="registration") == 1
