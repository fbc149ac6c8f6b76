"""The rules of admission before hashing, and the hashing budget's two lanes, without a
database or a server."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from services.identity.clients.hashing import HashBudget
from services.identity.domain.admission import (
    AdmissionPolicy,
    HashBudgetExhausted,
    HashSlots,
    Lane,
    Networks,
    Refusal,
    new_device_refusal,
    parse_ip,
    past_failure_cap,
)
from services.identity.settings import IdentitySettings
from services.runtime.config import ConfigError, load_settings

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_networks_hold_the_addresses_of_any_listed_cidr_and_no_others():
    networks = Networks(["203.0.113.0/24", "198.51.100.128/25", "2001:db8:7::/48", "10.0.0.7/32"])

    assert ip("203.0.113.255") in networks
    assert ip("198.51.100.200") in networks
    assert ip("198.51.100.127") not in networks
    assert ip("2001:db8:7:ffff::1") in networks
    assert ip("2001:db8:8::1") not in networks
    assert ip("10.0.0.7") in networks and ip("10.0.0.8") not in networks
    # An IPv4 address is never matched by an IPv6 prefix of the same bits, nor the reverse.
    assert ip("::ffff:203.0.113.1") not in networks
    assert None not in networks


def test_an_unreadable_cidr_is_skipped_and_an_empty_list_holds_nothing():
    assert ip("192.0.2.1") in Networks(["not a network", "192.0.2.0/24"])
    assert not Networks([])
    assert ip("192.0.2.1") not in Networks([])


def test_a_network_is_contained_only_until_the_containment_ends():
    policy = AdmissionPolicy(
        contained_networks=Networks(["203.0.113.0/24"]),
        containment_until=NOW + timedelta(minutes=10),
    )

    assert policy.contained(ip("203.0.113.9"), NOW)
    assert not policy.contained(ip("192.0.2.9"), NOW)
    assert not policy.contained(ip("203.0.113.9"), NOW + timedelta(minutes=10))
    assert not AdmissionPolicy(contained_networks=policy.contained_networks).contained(
        ip("203.0.113.9"), NOW
    )


def test_a_blocked_network_or_country_is_named_as_the_reason_and_other_addresses_pass():
    looked_up: list[str] = []

    def country_of(address: str) -> str:
        looked_up.append(address)
        return {"192.0.2.1": "US"}.get(address, "JP")

    policy = AdmissionPolicy(
        blocked_networks=Networks(["198.51.100.0/24"]), blocked_countries=frozenset({"US"})
    )
    assert policy.blocked(ip("198.51.100.1"), country_of) is Refusal.BLOCKED_NETWORK
    assert policy.blocked(ip("192.0.2.1"), country_of) is Refusal.BLOCKED_COUNTRY
    assert policy.blocked(ip("192.0.2.2"), country_of) is None
    assert policy.blocked(parse_ip("not an address"), country_of) is None
    # Only while some country is blocked is a country looked up at all.
    looked_up.clear()
    assert AdmissionPolicy().blocked(ip("192.0.2.1"), country_of) is None
    assert looked_up == []


def test_a_contained_network_is_refused_before_a_full_lane_and_an_open_one_admits():
    assert (
        new_device_refusal(contained=True, wave=True, hash_room=False) is Refusal.CONTAINED_NETWORK
    )
    assert new_device_refusal(contained=False, wave=True, hash_room=True) is Refusal.STUFFING_WAVE
    assert new_device_refusal(contained=False, wave=False, hash_room=False) is Refusal.HASH_BUDGET
    assert new_device_refusal(contained=False, wave=False, hash_room=True) is None


def test_a_wave_lasts_while_an_alerts_containment_is_in_force_and_not_after():
    wave = AdmissionPolicy(
        containment_until=NOW + timedelta(minutes=5), containment_alert_id="alert-1"
    )
    assert wave.wave(NOW)
    assert not wave.wave(NOW + timedelta(minutes=5))
    # Lifted: risk sends the policy without its alert or end.
    assert not AdmissionPolicy().wave(NOW)
    assert not AdmissionPolicy(containment_until=NOW + timedelta(minutes=5)).wave(NOW)


def test_an_ipv4_mapped_address_matches_ipv4_networks_as_risk_matches_it():
    policy = AdmissionPolicy(
        contained_networks=Networks(["203.0.113.0/24"]),
        containment_until=NOW + timedelta(minutes=5),
    )
    assert parse_ip("::ffff:203.0.113.5") == ip("203.0.113.5")
    assert policy.contained(parse_ip("::ffff:203.0.113.5"), NOW)


def test_the_failure_cap_is_one_hundred_consecutive_failures():
    assert not past_failure_cap(99)
    assert past_failure_cap(100)


def test_a_known_device_may_take_any_free_slot_and_a_stranger_not_the_reserved_one():
    slots = HashSlots(total=2, for_known_devices=1)

    assert slots.may_start(Lane.NEW_DEVICE, running_known=0, running_new=0, known_waiting=0)
    assert not slots.may_start(Lane.NEW_DEVICE, running_known=0, running_new=1, known_waiting=0)
    assert slots.may_start(Lane.KNOWN_DEVICE, running_known=0, running_new=1, known_waiting=0)
    assert slots.may_start(Lane.KNOWN_DEVICE, running_known=1, running_new=0, known_waiting=0)
    assert not slots.may_start(Lane.KNOWN_DEVICE, running_known=1, running_new=1, known_waiting=0)


def test_a_stranger_does_not_take_a_slot_a_known_device_is_waiting_for():
    slots = HashSlots(total=3, for_known_devices=1)
    assert not slots.may_start(Lane.NEW_DEVICE, running_known=2, running_new=0, known_waiting=1)


@pytest.mark.parametrize(("total", "reserved"), [(0, 0), (2, 2), (1, 1), (2, -1)])
def test_slots_that_leave_strangers_none_are_a_configuration_error(total: int, reserved: int):
    env = {
        "DATABASE_URL": "postgresql://unused/identity",
        "IDENTITY_SECRETS_KEY": base64.b64encode(bytes(32)).decode(),
        "IDENTITY_HASH_SLOTS": str(total),
        "IDENTITY_HASH_SLOTS_FOR_KNOWN_DEVICES": str(reserved),
    }
    with pytest.raises(ConfigError, match="IDENTITY_HASH_SLOTS"):
        load_settings(IdentitySettings, env)


def test_the_hash_slots_default_to_the_cores_with_one_kept_for_known_devices():
    env = {
        "DATABASE_URL": "postgresql://unused/identity",
        "IDENTITY_SECRETS_KEY": base64.b64encode(bytes(32)).decode(),
    }
    plan = load_settings(IdentitySettings, env).hash_slot_plan()
    assert plan.total >= 1
    assert plan.for_known_devices == (1 if plan.total >= 2 else 0)
    single = load_settings(IdentitySettings, {**env, "IDENTITY_HASH_SLOTS": "1"})
    assert single.hash_slot_plan() == HashSlots(total=1, for_known_devices=0)


def budget(
    *,
    total: int = 2,
    reserved: int = 1,
    queue: int = 1,
    new_wait: float = 30,
    hash_seconds: float = 0.001,
) -> HashBudget:
    return HashBudget(
        HashSlots(total=total, for_known_devices=reserved),
        queue=queue,
        new_wait=new_wait,
        known_wait=30,
        hash_seconds=hash_seconds,
    )


async def holding(
    budget: HashBudget, lane: Lane, release: asyncio.Event, entered: asyncio.Event
) -> None:
    async with budget.slot(lane):
        entered.set()
        await release.wait()


async def test_a_known_device_is_not_queued_behind_strangers():
    hashes = budget(queue=3)
    release = asyncio.Event()
    first = asyncio.Event()
    stranger = asyncio.create_task(holding(hashes, Lane.NEW_DEVICE, release, first))
    await first.wait()
    queued = [
        asyncio.create_task(holding(hashes, Lane.NEW_DEVICE, release, asyncio.Event()))
        for _ in range(3)
    ]
    await asyncio.sleep(0)

    # Three strangers wait; the known device starts at once in its own slot.
    async with hashes.slot(Lane.KNOWN_DEVICE):
        pass
    release.set()
    await asyncio.gather(stranger, *queued)


async def test_strangers_beyond_the_queue_are_refused_at_once_and_the_owner_still_gets_in():
    hashes = budget(queue=1)
    release = asyncio.Event()
    first = asyncio.Event()
    running = asyncio.create_task(holding(hashes, Lane.NEW_DEVICE, release, first))
    await first.wait()
    waiting = asyncio.create_task(holding(hashes, Lane.NEW_DEVICE, release, asyncio.Event()))
    await asyncio.sleep(0)

    assert not hashes.has_room(Lane.NEW_DEVICE)
    with pytest.raises(HashBudgetExhausted):
        async with hashes.slot(Lane.NEW_DEVICE):
            pytest.fail("a stranger past the queue got a slot")
    assert hashes.has_room(Lane.KNOWN_DEVICE)
    async with hashes.slot(Lane.KNOWN_DEVICE):
        pass
    release.set()
    await asyncio.gather(running, waiting)
    assert hashes.has_room(Lane.NEW_DEVICE)


async def test_a_stranger_who_waits_too_long_is_refused_and_gives_its_place_back():
    hashes = budget(queue=1, new_wait=0.01)
    release = asyncio.Event()
    first = asyncio.Event()
    running = asyncio.create_task(holding(hashes, Lane.NEW_DEVICE, release, first))
    await first.wait()

    with pytest.raises(HashBudgetExhausted):
        async with hashes.slot(Lane.NEW_DEVICE):
            pytest.fail("the slot was never free")
    assert hashes.has_room(Lane.NEW_DEVICE)
    release.set()
    await running


async def test_a_freed_slot_goes_to_a_waiting_known_device_before_a_waiting_stranger():
    hashes = budget(total=1, reserved=0, queue=2)
    release = asyncio.Event()
    first = asyncio.Event()
    running = asyncio.create_task(holding(hashes, Lane.NEW_DEVICE, release, first))
    await first.wait()
    order: list[Lane] = []

    async def hash_for(lane: Lane) -> None:
        async with hashes.slot(lane):
            order.append(lane)

    stranger = asyncio.create_task(hash_for(Lane.NEW_DEVICE))
    await asyncio.sleep(0)
    owner = asyncio.create_task(hash_for(Lane.KNOWN_DEVICE))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(running, stranger, owner)
    assert order == [Lane.KNOWN_DEVICE, Lane.NEW_DEVICE]


async def test_an_admitted_stranger_holds_its_place_until_it_hashes_or_gives_it_up():
    hashes = budget(total=2, reserved=1, queue=1)
    first = hashes.admit(Lane.NEW_DEVICE)
    second = hashes.admit(Lane.NEW_DEVICE)
    assert first is not None and second is not None
    # One slot for strangers and one place in the queue: both taken, by attempts
    # that have not yet started hashing.
    assert hashes.admit(Lane.NEW_DEVICE) is None
    assert not hashes.has_room(Lane.NEW_DEVICE)
    second.give_up()
    second.give_up()
    assert hashes.has_room(Lane.NEW_DEVICE)

    async with hashes.slot(Lane.NEW_DEVICE, first):
        # Hashing now: it counts as running, no longer as admitted.
        assert hashes.has_room(Lane.NEW_DEVICE)
    assert hashes.admit(Lane.NEW_DEVICE) is not None


def test_a_stranger_who_would_wait_longer_than_the_bound_is_refused_at_once():
    # Hashes take 0.5 s lately; a stranger may wait 2 s for the one strangers' slot.
    hashes = budget(queue=64, new_wait=2.0, hash_seconds=0.5)
    places = []
    while (place := hashes.admit(Lane.NEW_DEVICE)) is not None:
        places.append(place)
    # One hashing and four waiting (2 s of hashes) before the next would wait too long.
    assert len(places) == 5
    for _ in range(8):
        hashes.observe(0.1)
    assert hashes.has_room(Lane.NEW_DEVICE), "hashes got faster, so the lane has room again"
    assert hashes.has_room(Lane.KNOWN_DEVICE)


def test_the_wait_a_stranger_faces_counts_only_the_strangers_ahead_of_it_per_slot():
    slots = HashSlots(total=3, for_known_devices=1)
    assert slots.stranger_wait(0, 1.0) == 0
    assert slots.stranger_wait(1, 1.0) == 0
    assert slots.stranger_wait(2, 1.0) == 0.5
    assert slots.stranger_wait(5, 1.0) == 2.0


async def test_the_policy_is_parsed_once_per_version_not_per_attempt():
    from mamoru.risk.v1 import risk_pb2

    from services.identity.clients.admission import PolicyAdmission
    from services.runtime.peers import PolicyView

    view = PolicyView()
    admission = PolicyAdmission(view, lambda ip: "")
    assert admission.current().version == 0
    policy = risk_pb2.Policy(version=3, contained_networks=["203.0.113.0/24"])
    policy.containment_until.FromDatetime(NOW + timedelta(minutes=5))
    await view.apply(policy)

    parsed = admission.current()
    assert parsed is admission.current()
    assert parsed.version == 3 and parsed.contained(ip("203.0.113.5"), NOW)
    await view.apply(risk_pb2.Policy(version=4, blocked_countries=["us"]))
    assert admission.current().blocked(ip("192.0.2.1"), lambda _: "US") is Refusal.BLOCKED_COUNTRY
    assert not admission.current().contained(ip("203.0.113.5"), NOW)
