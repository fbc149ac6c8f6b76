"""Admission before hashing, over real identity, risk and notify servers: what identity
refuses without a password hash, and the devices it still lets in.

What a refusal cost is read from identity's own metrics (hashes computed, refusals by
reason), never from inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import aiohttp
import grpc
import pytest
from mamoru.identity.v1 import identity_pb2 as pb
from mamoru.risk.v1 import risk_pb2
from prometheus_client.parser import text_string_to_metric_families

from services.identity.domain.admission import MAX_CONSECUTIVE_FAILURES
from services.runtime.peers import PolicyView
from tests.e2e.identity.conftest import IdentityOnCluster, start_identity
from tests.harness import Cluster
from tests.support.people import TIMEOUT, Person, client, home_address

pytestmark = pytest.mark.asyncio

WAIT_SECONDS = 60.0
HASHES = "mamoru_identity_password_hashes_total"
REFUSED = "mamoru_identity_refused_without_hash_total"


class Metrics:
    """Identity's counters as its /metrics endpoint shows them."""

    def __init__(self, cluster: Cluster) -> None:
        self.url = cluster.metrics_url("identity")

    async def read(self) -> dict[tuple[str, str], float]:
        async with aiohttp.ClientSession() as session, session.get(self.url) as reply:
            text = await reply.text()
        return {
            (sample.name, sample.labels.get("reason", "")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in (HASHES, REFUSED)
        }

    async def until(
        self, ready: Callable[[dict[tuple[str, str], float]], bool], what: str
    ) -> dict[tuple[str, str], float]:
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                while not ready(samples := await self.read()):  # noqa: ASYNC110 - polls from outside
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"identity never showed {what}") from None
        return samples


def hashes(samples: dict[tuple[str, str], float]) -> float:
    return samples.get((HASHES, ""), 0.0)


def refused(samples: dict[tuple[str, str], float], reason: str | None = None) -> float:
    return sum(
        value
        for (name, label), value in samples.items()
        if name == REFUSED and (reason is None or label == reason)
    )


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


def is_wrong_password(error: grpc.aio.AioRpcError) -> bool:
    code: grpc.StatusCode = error.code()
    details: str | None = error.details()
    return code == grpc.StatusCode.UNAUTHENTICATED and details == "invalid credentials"


def identity_policies(cluster: Cluster) -> PolicyView:
    """The policy identity follows from risk."""
    servicer: Any = cluster.running["identity"].app.servicers[0][1]
    view: PolicyView = servicer.identity.policies
    return view


async def policy_reaches_identity(cluster: Cluster, version: int) -> None:
    await identity_policies(cluster).wait_for_version(version, timeout=WAIT_SECONDS)


async def risk_sends(cluster: Cluster, change: Callable[[risk_pb2.Policy], None]) -> None:
    """Identity receives a newer policy from risk with ``change`` made to it, as risk
    sends one when it contains a wave's networks or an operator blocks one."""
    view = identity_policies(cluster)
    current = await view.wait_for_version(0, timeout=WAIT_SECONDS)
    policy = risk_pb2.Policy()
    policy.CopyFrom(current)
    policy.version = current.version + 1000
    change(policy)
    await view.apply(policy)


async def decisions_for(cluster: Cluster, ip: str) -> int:
    reply = await cluster.stub("risk", as_="operator").ListDecisions(
        risk_pb2.ListDecisionsRequest(ip_address=ip), timeout=TIMEOUT
    )
    return len(reply.decisions)


async def risk_never_assessed(cluster: Cluster, person: Person, ip: str) -> None:
    """No decision of risk's names ``ip``: checked once a later sign-in that did ask
    risk has its decision stored, so one that was asked earlier would show too."""
    seen = await decisions_for(cluster, person.ip)
    await IdentityOnCluster(cluster).sign_in(person)
    async with asyncio.timeout(WAIT_SECONDS):
        while await decisions_for(cluster, person.ip) == seen:  # noqa: ASYNC110 - polls risk
            await asyncio.sleep(0.05)
    assert await decisions_for(cluster, ip) == 0


def stranger_login(identifier: str, ip: str, device: str = "bot") -> pb.LoginRequest:
    return pb.LoginRequest(
        identifier=identifier, password="sakura-2019-summer!", client=client(device, ip)
    )


async def test_a_known_device_signs_in_while_new_device_attempts_beyond_the_budget_are_refused_without_a_hash(  # noqa: E501
    cluster: Cluster,
):
    # Two hashes at once, one kept for known devices, and no queue for strangers.
    await start_identity(
        cluster,
        env={
            "IDENTITY_HASH_SLOTS": "2",
            "IDENTITY_HASH_SLOTS_FOR_KNOWN_DEVICES": "1",
            "IDENTITY_HASH_QUEUE": "0",
        },
    )
    identity = IdentityOnCluster(cluster)
    metrics = Metrics(cluster)
    person = await identity.register("hanako@example.jp")
    before = await metrics.read()
    stop = asyncio.Event()
    answers: list[grpc.aio.AioRpcError | None] = []
    numbers = itertools.count()

    async def stranger() -> None:
        while not stop.is_set():
            n = next(numbers)
            # Each from an address of its own, under every per-address limit of risk's.
            request = stranger_login(f"leaked-{n}@example.jp", home_address(), f"bot-{n}")
            try:
                await identity.stub.Login(request, timeout=TIMEOUT)
                answers.append(None)
            except grpc.aio.AioRpcError as error:
                answers.append(error)

    flood = [asyncio.create_task(stranger()) for _ in range(12)]
    try:
        # The strangers' lane has overflowed: it is full, and stays so while they come.
        await metrics.until(
            lambda now: refused(now, "hash_budget") - refused(before, "hash_budget") >= 3,
            "new-device attempts refused by the hashing budget",
        )
        # The owner's own phone signs in during the flood (with a second factor if
        # risk, seeing the wave, asks for one): its password step is never turned away.
        await identity.sign_in(person)
    finally:
        stop.set()
        await asyncio.gather(*flood)

    after = await metrics.read()
    # Every attempt was answered, each with the wrong password's answer.
    assert answers and all(error is not None and is_wrong_password(error) for error in answers)
    # Each attempt either cost one hash or was refused without one; the owner's cost one.
    refusals = refused(after) - refused(before)
    assert refused(after, "hash_budget") - refused(before, "hash_budget") >= 3
    assert hashes(after) - hashes(before) == len(answers) - refusals + 1


async def test_a_new_device_in_a_contained_network_is_refused_without_asking_risk_while_a_known_device_there_signs_in(  # noqa: E501
    identity: IdentityOnCluster,
):
    cluster = identity.cluster
    metrics = Metrics(cluster)
    person = await identity.register("hanako@example.jp")
    contained_ip = "203.0.113.77"

    def contain(policy: risk_pb2.Policy) -> None:
        policy.contained_networks.append("203.0.113.0/24")
        policy.containment_until.GetCurrentTime()
        policy.containment_until.seconds += 600

    await risk_sends(cluster, contain)
    before = await metrics.read()

    # The leaked password from a phone the account does not know, with its own key...
    stranger = await refusal(identity.login(person, device="attacker-phone", ip=contained_ip))
    # ...and without any key, for an identifier that names no account.
    nobody = await refusal(
        identity.stub.Login(stranger_login("nobody@example.jp", contained_ip), timeout=TIMEOUT)
    )
    assert is_wrong_password(stranger) and is_wrong_password(nobody)
    after = await metrics.read()
    assert refused(after, "contained_network") - refused(before, "contained_network") == 2
    assert hashes(after) == hashes(before)
    await risk_never_assessed(cluster, person, contained_ip)

    # The owner's phone, in the same network, still signs in.
    before = await metrics.read()
    await identity.sign_in(person, ip=contained_ip)
    after = await metrics.read()
    assert refused(after) == refused(before)


async def test_while_risk_reports_a_wave_no_new_device_gets_a_hash_anywhere_and_known_devices_sign_in(  # noqa: E501
    identity: IdentityOnCluster,
):
    cluster = identity.cluster
    metrics = Metrics(cluster)
    person = await identity.register("hanako@example.jp")

    def wave(policy: risk_pb2.Policy) -> None:
        policy.contained_networks.append("203.0.113.0/24")
        policy.containment_until.GetCurrentTime()
        policy.containment_until.seconds += 600
        policy.containment_alert_id = "6f1c2d9e-0000-4000-8000-000000000001"

    await risk_sends(cluster, wave)
    before = await metrics.read()
    # The right password on a phone the account does not know, far from the wave's networks.
    stranger = await refusal(identity.login(person, device="new-phone", ip=home_address()))
    assert is_wrong_password(stranger)
    after = await metrics.read()
    assert refused(after, "stuffing_wave") - refused(before, "stuffing_wave") == 1
    assert hashes(after) == hashes(before)

    # The owner's own phone signs in all the same.
    before = await metrics.read()
    await identity.sign_in(person, ip=home_address())
    after = await metrics.read()
    assert refused(after) == refused(before)


async def test_a_blocked_network_is_refused_inside_identity_even_for_a_known_device(
    identity: IdentityOnCluster,
):
    cluster = identity.cluster
    metrics = Metrics(cluster)
    person = await identity.register("hanako@example.jp")
    await risk_sends(cluster, lambda policy: policy.blocked_networks.append("198.51.100.0/24"))
    before = await metrics.read()

    blocked = await refusal(identity.login(person, ip="198.51.100.200"))
    assert is_wrong_password(blocked)
    after = await metrics.read()
    assert refused(after, "blocked_network") - refused(before, "blocked_network") == 1
    assert hashes(after) == hashes(before)
    await risk_never_assessed(cluster, person, "198.51.100.200")


async def test_a_blocked_country_is_refused_inside_identity_for_sign_in_and_registration(
    identity: IdentityOnCluster,
):
    cluster = identity.cluster
    metrics = Metrics(cluster)
    person = await identity.register("hanako@example.jp")
    changed = await cluster.stub("risk", as_="operator").SetPolicy(
        risk_pb2.SetPolicyRequest(
            country=risk_pb2.CountryChange(country_code="US", blocked=True), reason="drill"
        ),
        timeout=TIMEOUT,
    )
    await policy_reaches_identity(cluster, changed.policy.version)
    before = await metrics.read()
    us_ip = "8.8.8.8"

    blocked = await refusal(identity.login(person, ip=us_ip))
    assert is_wrong_password(blocked)
    registration = await refusal(
        identity.stub.Register(
            pb.RegisterRequest(
                email="someone@example.com", password=person.password, client=client("pc", us_ip)
            ),
            timeout=TIMEOUT,
        )
    )
    assert registration.code() == grpc.StatusCode.FAILED_PRECONDITION
    after = await metrics.read()
    assert refused(after, "blocked_country") - refused(before, "blocked_country") == 2
    assert refused(after, "risk_verdict") == refused(before, "risk_verdict")
    assert hashes(after) == hashes(before)
    await risk_never_assessed(cluster, person, us_ip)


async def test_past_one_hundred_failures_a_new_device_is_refused_without_a_hash_and_the_owners_device_signs_in_and_resets_the_count(  # noqa: E501
    identity: IdentityOnCluster,
):
    metrics = Metrics(identity.cluster)
    person = await identity.register("hanako@example.jp")
    guesser = Person(
        email=person.email, account_id="", device="bot", password="not the password at all"
    )
    start = await metrics.read()

    async def guess() -> None:
        # From addresses of their own, so that risk's per-address limits do not stop
        # the guesses before the account's own cap does.
        await refusal(identity.login(guesser, device=f"bot-{next(bots)}", ip=home_address()))

    bots = itertools.count()
    for _ in range(MAX_CONSECUTIVE_FAILURES // 4):
        await asyncio.gather(*(guess() for _ in range(4)))
    # The failures are counted after their answers; guess on until the cap refuses one.
    async with asyncio.timeout(WAIT_SECONDS):
        while refused(await metrics.read(), "failure_cap") == refused(start, "failure_cap"):
            await guess()

    # Past the cap the right password from a new device gets the wrong one's answer, unhashed.
    before = await metrics.read()
    capped = await refusal(identity.login(person, device="new-phone", ip=home_address()))
    assert is_wrong_password(capped)
    after = await metrics.read()
    assert refused(after, "failure_cap") - refused(before, "failure_cap") == 1
    assert hashes(after) == hashes(before)

    # The owner's phone still signs in (a second factor after so many failures)...
    await identity.sign_in_with_email_code(person)
    # ...and that sign-in ends the run: a new device is asked for a second factor again.
    reply = await identity.login(person, device="new-phone", ip=home_address())
    assert reply.HasField("challenge")


async def test_every_refusal_reason_shows_from_the_start(identity: IdentityOnCluster):
    samples = await Metrics(identity.cluster).read()
    reasons = {label for name, label in samples if name == REFUSED}
    assert reasons >= {
        "risk_verdict",
        "blocked_network",
        "blocked_country",
        "contained_network",
        "stuffing_wave",
        "failure_cap",
        "hash_budget",
    }


# The refusal reports keep a contained wave visible to risk: a failure it can count.
async def test_a_refusal_risk_was_never_asked_about_reaches_it_as_a_failed_sign_in(
    identity: IdentityOnCluster,
):
    cluster = identity.cluster
    await risk_sends(cluster, lambda policy: policy.blocked_networks.append("198.51.100.0/24"))
    with contextlib.suppress(grpc.aio.AioRpcError):
        await identity.stub.Login(
            stranger_login("nobody@example.jp", "198.51.100.9"), timeout=TIMEOUT
        )
    url = cluster.metrics_url("risk")

    async def stuffing_signal() -> float:
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            text = await reply.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "mamoru_risk_stuffing_signal"
        )

    async with asyncio.timeout(WAIT_SECONDS):
        while await stuffing_signal() < 1:  # noqa: ASYNC110 - polls risk's metrics
            await asyncio.sleep(0.05)
