"""The assessments: what each signal must reach for its rule to fire.

The counting gathers the signals; these functions only decide.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from services.risk.domain.decisions import Assessment
from services.risk.domain.policy import Policy
from services.risk.domain.rules import HIGH_RISK_GOODS, HIGH_RISK_MERCHANT_CATEGORIES, RuleBook


@dataclass(frozen=True)
class LoginSignals:
    """Window counts as they stood before this attempt, and the account's history."""

    ip_failures: int
    subnet_failures: int
    account_failures: int
    global_failures: int
    global_attempts: int
    global_unknown_attempts: int
    ip_distinct_identifiers: int
    previous_login_country: str | None
    previous_login_at: datetime | None
    device_distinct_identifiers: int = 0


@dataclass(frozen=True)
class LoginFacts:
    account_known: bool
    known_device: bool
    method: str
    country: str
    now: datetime
    ip: str = ""


def assess_login(
    facts: LoginFacts, signals: LoginSignals, rules: RuleBook, policy: Policy
) -> Assessment:
    result = Assessment()
    if facts.country and facts.country in policy.blocked_countries:
        result.fire(rules.active("login.blocked_country"), 1, 1, f"country {facts.country}")
    if facts.method.startswith("external:"):
        provider = facts.method.removeprefix("external:")
        if provider in policy.external_login_suspended_providers:
            result.fire(
                rules.active("login.external_provider_suspended"), 1, 1, f"provider {provider}"
            )
    result.at_least(
        rules.active("login.ip_failures"), signals.ip_failures, "max_failures",
        "failed sign-ins from this IP in the window",
    )  # fmt: skip
    result.at_least(
        rules.active("login.subnet_failures"), signals.subnet_failures, "max_failures",
        "failed sign-ins from this subnet in the window",
    )  # fmt: skip
    result.at_least(
        rules.active("login.ip_distinct_accounts"), signals.ip_distinct_identifiers,
        "max_accounts", "distinct identifiers tried from this IP in the window",
    )  # fmt: skip
    result.at_least(
        rules.active("login.device_distinct_accounts"), signals.device_distinct_identifiers,
        "max_accounts", "distinct identifiers tried from this device in the window",
    )  # fmt: skip
    if facts.account_known:
        result.at_least(
            rules.active("login.account_failures"), signals.account_failures, "max_failures",
            "failed sign-ins on this account in the window",
        )  # fmt: skip
    # Passkeys cannot be replayed from a leaked list, so the global stuffing
    # signals only step up sign-ins that a list could pass.
    if facts.method != "passkey":
        result.at_least(
            rules.active("login.global_failures"), signals.global_failures, "max_failures",
            "failed sign-ins across all IPs in the window",
        )  # fmt: skip
        share_rule = rules.active("login.unknown_identifier_share")
        if share_rule is not None and signals.global_attempts >= share_rule.threshold(
            "min_attempts"
        ):
            share = signals.global_unknown_attempts / signals.global_attempts
            result.at_least(
                share_rule, share, "max_share",
                "share of attempts on unknown identifiers across all IPs in the window",
            )  # fmt: skip
    if facts.account_known and not facts.known_device:
        result.fire(rules.active("login.new_device"), 1, 1, "device not registered to account")
    # A contained network's password sign-ins are refused before any hash, unless the
    # device is one the account knows: its owner still signs in from the same network.
    if facts.method == "password" and not (facts.account_known and facts.known_device):
        contained = policy.contained_network(facts.ip, facts.now)
        if contained is not None:
            result.fire(
                rules.active("login.contained_network"), 1, 1,
                f"network {contained} contained for alert {policy.containment_alert_id}",
            )  # fmt: skip
    travel = rules.active("login.impossible_travel")
    if (
        travel is not None
        and facts.country
        and signals.previous_login_country
        and signals.previous_login_at is not None
        and signals.previous_login_country != facts.country
    ):
        elapsed = (facts.now - signals.previous_login_at).total_seconds()
        if elapsed < travel.threshold("window_seconds"):
            result.fire(
                travel, elapsed, travel.threshold("window_seconds"),
                f"seconds since sign-in from {signals.previous_login_country}, now {facts.country}",
            )  # fmt: skip
    return result


def refuse_blocked_network(result: Assessment, ip: str, rules: RuleBook, policy: Policy) -> None:
    """Any assessment with an address: one inside a blocked network is refused."""
    network = policy.blocked_network(ip)
    if network is not None:
        result.fire(rules.active("policy.blocked_network"), 1, 1, f"network {network}")


def assess_registration(
    country: str, ip_registrations: int, rules: RuleBook, policy: Policy
) -> Assessment:
    result = Assessment()
    if policy.registration_suspended:
        result.fire(rules.active("registration.suspended"), 1, 1, "registration suspended")
    if country and country in policy.blocked_countries:
        result.fire(rules.active("registration.blocked_country"), 1, 1, f"country {country}")
    result.at_least(
        rules.active("registration.ip_velocity"), ip_registrations, "max_registrations",
        "registrations from this IP in the window",
    )  # fmt: skip
    return result


@dataclass(frozen=True)
class TopUpFacts:
    amount_minor: int
    channel: str
    new_funding_source: bool
    country: str
    now: datetime


def assess_top_up(
    facts: TopUpFacts,
    recent_top_ups: int,
    last_credential_change_at: datetime | None,
    rules: RuleBook,
    policy: Policy,
) -> Assessment:
    result = Assessment()
    if policy.wind_down:
        result.fire(rules.active("top_up.wind_down"), 1, 1, "wind-down: payouts only")
    if facts.channel in policy.top_up_suspended_channels:
        result.fire(
            rules.active("top_up.channel_suspended"), 1, 1, f"channel {facts.channel} suspended"
        )
    if facts.country and facts.country in policy.blocked_countries:
        result.fire(rules.active("top_up.blocked_country"), 1, 1, f"country {facts.country}")
    result.at_least(
        rules.active("top_up.velocity"), recent_top_ups, "max_count",
        "top-ups of this wallet in the window",
    )  # fmt: skip
    result.at_least(
        rules.active("top_up.amount"), facts.amount_minor, "max_amount", "top-up amount"
    )
    if facts.new_funding_source:
        result.at_least(
            rules.active("top_up.new_funding_source"), facts.amount_minor, "min_amount",
            "first top-up from this funding source",
        )  # fmt: skip
    cooling = rules.active("top_up.after_credential_change")
    if cooling is not None and last_credential_change_at is not None:
        elapsed = (facts.now - last_credential_change_at).total_seconds()
        if elapsed < cooling.threshold("window_seconds"):
            result.fire(
                cooling, elapsed, cooling.threshold("window_seconds"),
                "seconds since a credential or contact change",
            )  # fmt: skip
    return result


@dataclass(frozen=True)
class PaymentFacts:
    amount_minor: int
    merchant_category: str
    basket: Collection[str]
    now: datetime


def assess_payment(
    facts: PaymentFacts,
    recent_payments: int,
    last_top_up_at: datetime | None,
    last_top_up_from_new_device: bool,
    rules: RuleBook,
    policy: Policy,
) -> Assessment:
    result = Assessment()
    if policy.payments_suspended:
        result.fire(rules.active("payment.suspended"), 1, 1, "payments suspended")
    result.at_least(
        rules.active("payment.velocity"), recent_payments, "max_count",
        "payments of this wallet in the window",
    )  # fmt: skip
    result.at_least(
        rules.active("payment.amount"), facts.amount_minor, "max_amount", "payment amount"
    )
    if facts.merchant_category in HIGH_RISK_MERCHANT_CATEGORIES:
        result.fire(
            rules.active("payment.merchant_category"), 1, 1,
            f"merchant category {facts.merchant_category}",
        )  # fmt: skip
    risky = sorted(HIGH_RISK_GOODS.intersection(facts.basket))
    if risky:
        result.at_least(
            rules.active("payment.high_risk_basket"), facts.amount_minor, "min_amount",
            f"basket holds {', '.join(risky)}",
        )  # fmt: skip
    after = rules.active("payment.after_new_device_top_up")
    if after is not None and last_top_up_at is not None and last_top_up_from_new_device:
        elapsed = (facts.now - last_top_up_at).total_seconds()
        if elapsed < after.threshold("window_seconds"):
            result.fire(
                after, elapsed, after.threshold("window_seconds"),
                "seconds since a top-up from a new device",
            )  # fmt: skip
    return result
