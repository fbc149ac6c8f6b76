"""Blocked and contained networks: one spelling of a network, refusals on every
assessment with an address, and risk's own containment of a stuffing wave (which
networks, for how long, and never again for an alert an operator lifted)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from services.risk.domain import assess
from services.risk.domain.alerts import FailureReading, RecentFailures, stuffing_wave
from services.risk.domain.containment import (
    ContainmentRule,
    NetworkFailures,
    contain,
    end_of_containment,
    summary,
)
from services.risk.domain.network import network_of
from services.risk.domain.policy import Policy, PolicyChange, apply_change, audited
from services.risk.domain.rules import RuleBook, Verdict
from services.risk.domain.windows import bucket_of
from tests.unit.risk.test_assessments import World, login, top_up

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ALERT = "0190f5a4-0000-7000-8000-00000000a1e7"
RULE = ContainmentRule(min_failures=3, seconds=900, max_networks=1024)


def contained(*networks: str, until: datetime | None = None) -> Policy:
    return apply_change(
        Policy(),
        PolicyChange(
            "containment", True, key=ALERT, networks=networks,
            until=until or NOW + timedelta(minutes=15),
        ),
    )  # fmt: skip


def test_networks_are_spelled_one_way_and_host_bits_or_too_broad_networks_are_refused():
    assert network_of(" 203.0.113.0/24") == "203.0.113.0/24"
    assert network_of("2001:DB8:0:0::/48") == "2001:db8::/48"
    assert network_of("::ffff:203.0.113.0/120") == "203.0.113.0/24"
    for bad in ("203.0.113.7/24", "203.0.113.0/33", "example.jp", "", "0.0.0.0/0", "2000::/3"):
        with pytest.raises(ValueError):
            network_of(bad)


async def test_a_blocked_network_denies_sign_in_sign_up_and_top_up_but_not_its_neighbour():
    world = World()
    world.in_force.policy = apply_change(
        Policy(), PolicyChange("network", True, key="203.0.113.0/24")
    )
    assessments = world.assessments()
    inside = "203.0.113.77"
    refused = [
        await assessments.login(login(ip=inside)),
        await assessments.login(login(ip=inside, method="passkey")),
        await assessments.top_up(top_up(ip=inside)),
    ]
    for decision in refused:
        assert decision.verdict == Verdict.DENY
        assert [(r.rule_id, r.detail) for r in decision.reasons] == [
            ("policy.blocked_network", "network 203.0.113.0/24")
        ]
    assert (await assessments.login(login(ip="203.0.114.77"))).verdict == Verdict.ALLOW


async def test_a_contained_networks_new_device_password_sign_in_is_throttled_and_names_its_alert():
    world = World()
    world.in_force.policy = contained("203.0.113.0/24", "2001:db8:abcd::/48")
    assessments = world.assessments()
    for command in (
        login(ip="203.0.113.9", known_device=False),
        login(ip="2001:db8:abcd:12::1", known_device=False),
        login(ip="203.0.113.9", account_id="", known_device=False),
    ):
        decision = await assessments.login(command)
        assert decision.verdict == Verdict.THROTTLE
        reason = next(r for r in decision.reasons if r.rule_id == "login.contained_network")
        network = (
            command.ip.rpartition(".")[0] + ".0/24" if "." in command.ip else "2001:db8:abcd::/48"
        )
        assert reason.detail == f"network {network} contained for alert {ALERT}"


async def test_known_devices_passkeys_and_other_networks_are_never_throttled_by_a_containment():
    world = World()
    world.in_force.policy = contained("203.0.113.0/24")
    assessments = world.assessments()
    for command in (
        login(ip="203.0.113.9", known_device=True),
        login(ip="203.0.113.9", known_device=False, method="passkey"),
        login(ip="198.51.100.9", known_device=False),
    ):
        decision = await assessments.login(command)
        assert "login.contained_network" not in [r.rule_id for r in decision.reasons]
        assert decision.verdict == Verdict.ALLOW


def test_a_containment_whose_time_has_passed_throttles_no_one():
    policy = contained("203.0.113.0/24", until=NOW)
    facts = assess.LoginFacts(
        account_known=False, known_device=False, method="password", country="", now=NOW,
        ip="203.0.113.9",
    )  # fmt: skip
    signals = assess.LoginSignals(0, 0, 0, 0, 0, 0, 1, None, None)
    assert assess.assess_login(facts, signals, RuleBook(), policy).verdict == Verdict.ALLOW
    assert end_of_containment(policy, NOW) == PolicyChange("containment", False, key=ALERT)
    assert end_of_containment(policy, NOW - timedelta(seconds=1)) is None


def test_a_containment_survives_its_stored_form_and_a_lift_clears_it_and_remembers_the_alert():
    policy = contained("203.0.113.0/24")
    assert Policy.from_document(policy.version, policy.to_document(), None) == policy
    lift = PolicyChange("lift_containment", True)
    lifted = apply_change(policy, lift)
    assert (lifted.contained_networks, lifted.containment_until, lifted.containment_alert_id) == (
        frozenset(), None, "",
    )  # fmt: skip
    assert lifted.lifted_containment_alert_id == ALERT
    assert audited(lift, policy) == {
        "switch": "lift_containment", "value": True, "alert_id": ALERT, "networks": 1,
    }  # fmt: skip


def test_a_wave_contains_the_networks_over_the_threshold_most_failures_first_up_to_the_bound():
    sources = [
        NetworkFailures("198.51.100.0/24", 3),
        NetworkFailures("203.0.113.0/24", 40),
        NetworkFailures("192.0.2.0/24", 2),
        NetworkFailures("100.64.0.0/24", 9),
    ]
    change = contain(Policy(), ALERT, sources, NOW, RULE)
    assert change is not None
    assert change.networks == ("100.64.0.0/24", "198.51.100.0/24", "203.0.113.0/24")
    assert change.until == NOW + timedelta(seconds=900)
    bounded = contain(Policy(), ALERT, sources, NOW, dataclasses.replace(RULE, max_networks=2))
    assert bounded is not None and bounded.networks == ("100.64.0.0/24", "203.0.113.0/24")
    assert summary(bounded, 3) == {
        "contained_networks": 2, "qualifying_networks": 3,
        "networks": ["100.64.0.0/24", "203.0.113.0/24"], "more_networks": 0,
        "until": (NOW + timedelta(seconds=900)).isoformat(),
    }  # fmt: skip
    assert contain(Policy(), ALERT, sources, NOW, dataclasses.replace(RULE, max_networks=0)) is None
    assert contain(Policy(), ALERT, sources[2:3], NOW, RULE) is None


def test_a_containment_grows_while_the_wave_lasts_and_is_renewed_only_when_half_its_time_is_gone():
    policy = contained("203.0.113.0/24")
    same = [NetworkFailures("203.0.113.0/24", 50)]
    assert contain(policy, ALERT, same, NOW + timedelta(minutes=5), RULE) is None
    renewed = contain(policy, ALERT, same, NOW + timedelta(minutes=8), RULE)
    assert renewed is not None and renewed.until == NOW + timedelta(minutes=23)
    grown = contain(policy, ALERT, [*same, NetworkFailures("192.0.2.0/24", 3)], NOW, RULE)
    assert grown is not None and grown.networks == ("192.0.2.0/24", "203.0.113.0/24")
    # The set only grows while its alert lasts: a network gone quiet stays contained.
    kept = contain(policy, ALERT, [NetworkFailures("192.0.2.0/24", 3)], NOW, RULE)
    assert kept is not None and set(kept.networks) == {"192.0.2.0/24", "203.0.113.0/24"}


def test_risk_never_contains_again_for_an_alert_an_operator_lifted_but_does_for_a_new_one():
    lifted = apply_change(contained("203.0.113.0/24"), PolicyChange("lift_containment", True))
    sources = [NetworkFailures("203.0.113.0/24", 50)]
    assert contain(lifted, ALERT, sources, NOW, RULE) is None
    again = contain(lifted, "another-alert", sources, NOW, RULE)
    assert again is not None and again.key == "another-alert"


def test_recent_failures_are_the_growth_over_the_last_window_and_a_late_backlog_is_not_a_wave():
    recent = RecentFailures()
    now_bucket = bucket_of(NOW)
    old = now_bucket - 5
    seen = []
    for second, (current, backlog) in enumerate([(0, 0), (4, 0), (8, 0), (8, 900), (9, 900)]):
        at = NOW + timedelta(seconds=second)
        seen.append(
            recent.add(FailureReading(at, {now_bucket: current, old: backlog}), window_seconds=10)
        )
    assert seen == [0, 4, 8, 8, 9]
    # Readings older than the window no longer count.
    later = NOW + timedelta(seconds=30)
    assert recent.add(FailureReading(later, {bucket_of(later): 0, now_bucket: 9}), 10) == 0


def test_the_stuffing_rule_fires_on_its_short_window_rate_or_its_long_window_count():
    rules = RuleBook()
    assert stuffing_wave(failed_sign_ins=999, recent_failures=199, rules=rules) is None
    fast = stuffing_wave(failed_sign_ins=200, recent_failures=200, rules=rules)
    assert fast is not None
    assert (fast.alert.observed, fast.alert.threshold) == (20.0, 20.0)
    assert fast.alert.evidence["failed_sign_ins"] == 200.0
    assert "20/s over the last 10 s" in fast.headline
    slow = stuffing_wave(failed_sign_ins=1000, recent_failures=0, rules=rules)
    assert slow is not None and slow.alert.evidence["failures_per_second"] == 0.0
