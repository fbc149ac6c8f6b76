"""Risk's pure rules: verdict order, thresholds, policy changes, victim grouping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.risk.domain import assess, victims
from services.risk.domain.alerts import fired_alerts
from services.risk.domain.network import normalised, subnet_of
from services.risk.domain.policy import Policy, PolicyChange, apply_change, parse_switch
from services.risk.domain.rules import DEFAULT_RULES, RuleBook, Verdict

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def signals(**changes: object) -> assess.LoginSignals:
    base: dict[str, object] = dict(
        ip_failures=0, subnet_failures=0, account_failures=0, global_failures=0,
        global_attempts=0, global_unknown_attempts=0, ip_distinct_identifiers=1,
        previous_login_country=None, previous_login_at=None,
    )  # fmt: skip
    base.update(changes)
    return assess.LoginSignals(**base)  # type: ignore[arg-type]


def facts(**changes: object) -> assess.LoginFacts:
    base: dict[str, object] = dict(
        account_known=True, known_device=True, method="password", country="JP", now=NOW
    )
    base.update(changes)
    return assess.LoginFacts(**base)  # type: ignore[arg-type]


def test_a_quiet_sign_in_from_a_known_device_is_allowed_with_no_reasons():
    result = assess.assess_login(facts(), signals(), RuleBook(), Policy())
    assert (result.verdict, result.score, result.reasons) == (Verdict.ALLOW, 0, [])


def test_the_strictest_verdict_wins_and_every_fired_rule_is_a_reason():
    result = assess.assess_login(
        facts(known_device=False), signals(ip_failures=20, account_failures=10), RuleBook(),
        Policy(),
    )  # fmt: skip
    assert result.verdict == Verdict.THROTTLE
    assert [r.rule_id for r in result.reasons] == [
        "login.ip_failures", "login.account_failures", "login.new_device",
    ]  # fmt: skip
    assert result.reasons[0].observed == 20 and result.reasons[0].threshold == 20
    assert result.score == 1000


def test_unknown_identifier_share_needs_enough_attempts_to_count():
    few = assess.assess_login(
        facts(), signals(global_attempts=99, global_unknown_attempts=99), RuleBook(), Policy()
    )
    many = assess.assess_login(
        facts(), signals(global_attempts=100, global_unknown_attempts=31), RuleBook(), Policy()
    )
    assert few.verdict == Verdict.ALLOW
    assert many.verdict == Verdict.CHALLENGE
    assert many.reasons[0].observed == pytest.approx(0.31)


def test_passkey_sign_ins_are_not_stepped_up_by_a_stuffing_wave():
    wave = signals(global_failures=10_000)
    assert assess.assess_login(facts(method="passkey"), wave, RuleBook(), Policy()).verdict == (
        Verdict.ALLOW
    )
    assert assess.assess_login(facts(), wave, RuleBook(), Policy()).verdict == Verdict.CHALLENGE


def test_a_country_change_within_the_window_is_impossible_travel_but_not_after_it():
    soon = signals(previous_login_country="BR", previous_login_at=NOW - timedelta(minutes=10))
    later = signals(previous_login_country="BR", previous_login_at=NOW - timedelta(hours=2))
    assert assess.assess_login(facts(), soon, RuleBook(), Policy()).verdict == Verdict.CHALLENGE
    assert assess.assess_login(facts(), later, RuleBook(), Policy()).verdict == Verdict.ALLOW


def test_a_disabled_rule_never_fires():
    book = RuleBook()
    book.rules["login.ip_failures"] = book["login.ip_failures"].changed(
        enabled=False, thresholds={}, verdict=None
    )
    assert assess.assess_login(facts(), signals(ip_failures=99), book, Policy()).reasons == []


def test_changing_an_unknown_threshold_is_refused():
    with pytest.raises(KeyError):
        RuleBook()["login.ip_failures"].changed(enabled=None, thresholds={"nope": 1}, verdict=None)


def test_blocked_country_and_suspended_provider_deny_sign_in():
    policy = apply_change(Policy(), PolicyChange("country", True, key="KP"))
    policy = apply_change(policy, PolicyChange("external_login", True, key="line"))
    assert policy.version == 2
    blocked = assess.assess_login(facts(country="KP"), signals(), RuleBook(), policy)
    external = assess.assess_login(facts(method="external:line"), signals(), RuleBook(), policy)
    assert blocked.verdict == external.verdict == Verdict.DENY


def test_wind_down_and_a_suspended_channel_deny_top_ups_with_a_reason_each():
    policy = apply_change(Policy(), PolicyChange("wind_down", True))
    policy = apply_change(policy, PolicyChange("top_up_channel", True, key="card"))
    top_up = assess.TopUpFacts(
        amount_minor=1000, channel="card", new_funding_source=False, country="JP", now=NOW
    )
    result = assess.assess_top_up(top_up, 0, None, RuleBook(), policy)
    assert result.verdict == Verdict.DENY
    assert [r.rule_id for r in result.reasons] == ["top_up.wind_down", "top_up.channel_suspended"]


def test_a_top_up_soon_after_a_credential_change_needs_step_up():
    top_up = assess.TopUpFacts(
        amount_minor=1000, channel="bank", new_funding_source=False, country="", now=NOW
    )
    result = assess.assess_top_up(top_up, 0, NOW - timedelta(hours=1), RuleBook(), Policy())
    assert [r.rule_id for r in result.reasons] == ["top_up.after_credential_change"]
    assert result.verdict == Verdict.CHALLENGE


def test_gift_cards_after_a_new_device_top_up_are_stepped_up():
    payment = assess.PaymentFacts(
        amount_minor=20000, merchant_category="5411", basket=["gift_card", "food"], now=NOW
    )
    result = assess.assess_payment(
        payment, 0, NOW - timedelta(minutes=5), True, RuleBook(), Policy()
    )
    assert [r.rule_id for r in result.reasons] == [
        "payment.high_risk_basket", "payment.after_new_device_top_up",
    ]  # fmt: skip
    assert result.verdict == Verdict.CHALLENGE


def test_automatic_actions_only_turn_switches_on():
    assert parse_switch("top_up_channel:card") == PolicyChange("top_up_channel", True, key="card")
    assert parse_switch("country:cn") == PolicyChange("country", True, key="CN")
    for bad in ("top_up_channel:crypto", "wind_down:off", "nonsense", "country:CHN"):
        with pytest.raises(ValueError):
            parse_switch(bad)


def test_a_policy_survives_its_stored_form():
    policy = apply_change(Policy(), PolicyChange("payment_fallback_limit", 500))
    again = Policy.from_document(policy.version, policy.to_document(), None)
    assert again == policy


def test_subnets_group_ipv4_by_24_and_ipv6_by_48_in_one_spelling():
    assert subnet_of("203.0.113.77") == "203.0.113.0/24"
    assert subnet_of("::ffff:203.0.113.77") == "203.0.113.0/24"
    assert subnet_of("2001:db8:abcd:12::1") == "2001:db8:abcd::/48"
    assert normalised("2001:0db8::0001") == "2001:db8::1"


def test_alert_rules_fire_at_their_threshold_with_evidence():
    aggregates = {
        "failed_sign_ins": 1000.0, "foreign_sign_in_attempts": 0.0,
        "top_up_amount_minor": 0.0, "high_risk_payments": 0.0,
    }  # fmt: skip
    fired = fired_alerts(aggregates, RuleBook())
    assert [(f.rule.rule_id, f.evidence["failed_sign_ins"]) for f in fired] == [
        ("alert.stuffing_wave", 1000.0)
    ]


def test_a_movement_reached_through_two_sessions_counts_once():
    moved = victims.Movement("m-1", "w", "payment", 700, "JPY", NOW, "s-1")
    accounts = victims.affected_accounts(
        [("b", "s-2", None), ("a", "s-1", moved), ("a", "s-3", moved)]
    )
    assert [(a.account_id, a.session_ids, a.total_minor) for a in accounts] == [
        ("a", ["s-1", "s-3"], 700),
        ("b", ["s-2"], 0),
    ]


def test_every_rule_has_a_score_and_alert_rules_a_window():
    for rule in DEFAULT_RULES:
        assert "score" in rule.thresholds
        if rule.rule_id.startswith("alert."):
            assert "window_seconds" in rule.thresholds


def test_a_partner_switch_suspends_one_partner_and_survives_its_stored_form():
    partner = "0b8e3d52-6f0e-4f7a-9d2c-1a2b3c4d5e6f"
    policy = apply_change(Policy(), PolicyChange("partner", True, key=partner))
    policy = apply_change(policy, PolicyChange("partner", True, key="other"))
    policy = apply_change(policy, PolicyChange("partner", False, key="other"))
    assert policy.suspended_partners == frozenset({partner})
    stored = Policy.from_document(policy.version, policy.to_document(), None)
    assert stored.suspended_partners == frozenset({partner})
    assert parse_switch(f"partner:{partner}") == PolicyChange("partner", True, key=partner)
