"""The rules risk applies, their default thresholds, and the verdict each gives.

Defaults live here; operators override thresholds, verdicts and the enabled
flag at run time (UpdateRule), and every replica reloads the overrides.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class Verdict(enum.IntEnum):
    """Ordered by severity: the strictest verdict of the rules that fired wins."""

    ALLOW = 1
    CHALLENGE = 2
    THROTTLE = 3
    DENY = 4


@dataclass(frozen=True)
class Rule:
    rule_id: str
    description: str
    enabled: bool
    thresholds: Mapping[str, float]
    verdict: Verdict
    auto_action: str = ""

    def threshold(self, name: str) -> float:
        return float(self.thresholds[name])

    def changed(
        self,
        *,
        enabled: bool | None,
        thresholds: Mapping[str, float],
        verdict: Verdict | None,
    ) -> Rule:
        unknown = set(thresholds) - set(self.thresholds)
        if unknown:
            raise KeyError(", ".join(sorted(unknown)))
        return dataclasses.replace(
            self,
            enabled=self.enabled if enabled is None else enabled,
            thresholds={**self.thresholds, **thresholds},
            verdict=self.verdict if verdict is None else verdict,
        )


def _rule(
    rule_id: str,
    description: str,
    verdict: Verdict,
    score: float,
    auto_action: str = "",
    **thresholds: float,
) -> Rule:
    return Rule(
        rule_id=rule_id,
        description=description,
        enabled=True,
        thresholds={**thresholds, "score": score},
        verdict=verdict,
        auto_action=auto_action,
    )


V = Verdict
DEFAULT_RULES: tuple[Rule, ...] = (
    # Sign-in
    _rule("login.ip_failures", "failed sign-ins from one IP", V.THROTTLE, 700,
          max_failures=20, window_seconds=300),
    _rule("login.subnet_failures", "failed sign-ins from one /24 (IPv4) or /48 (IPv6)",
          V.THROTTLE, 600, max_failures=60, window_seconds=300),
    _rule("login.account_failures", "failed sign-ins on one account (step-up, never lock-out)",
          V.CHALLENGE, 400, max_failures=10, window_seconds=900),
    _rule("login.ip_distinct_accounts", "distinct identifiers tried from one IP", V.THROTTLE,
          700, max_accounts=10, window_seconds=3600),
    _rule("login.device_distinct_accounts",
          "distinct identifiers tried from one device not registered to them", V.THROTTLE,
          700, max_accounts=10, window_seconds=3600),
    _rule("login.global_failures",
          "failed sign-ins across all IPs: stuffing spread under the per-IP limits",
          V.CHALLENGE, 400, max_failures=300, window_seconds=300),
    _rule("login.unknown_identifier_share",
          "share of attempts on identifiers that do not exist (a list replay)", V.CHALLENGE,
          400, max_share=0.3, min_attempts=100, window_seconds=300),
    _rule("login.new_device", "sign-in from a device not registered to the account",
          V.ALLOW, 100),
    _rule("login.impossible_travel",
          "country differs from the account's previous sign-in soon before", V.CHALLENGE, 400,
          window_seconds=3600),
    _rule("login.blocked_country", "IP in a country the policy blocks", V.DENY, 1000),
    _rule("login.external_provider_suspended", "external-ID provider suspended by policy",
          V.DENY, 1000),
    # Registration
    _rule("registration.suspended", "registration suspended by policy", V.DENY, 1000),
    _rule("registration.blocked_country", "IP in a country the policy blocks", V.DENY, 1000),
    _rule("registration.ip_velocity", "registrations from one IP", V.THROTTLE, 700,
          max_registrations=5, window_seconds=3600),
    # Top-up
    _rule("top_up.wind_down", "wind-down: no top-ups", V.DENY, 1000),
    _rule("top_up.channel_suspended", "top-up channel suspended by policy", V.DENY, 1000),
    _rule("top_up.blocked_country", "IP in a country the policy blocks", V.DENY, 1000),
    _rule("top_up.velocity", "top-ups of one wallet", V.DENY, 800,
          max_count=5, window_seconds=3600),
    _rule("top_up.amount", "large top-up", V.CHALLENGE, 400, max_amount=50000),
    _rule("top_up.new_funding_source", "first top-up from a funding source, above an amount",
          V.CHALLENGE, 400, min_amount=10000),
    _rule("top_up.after_credential_change",
          "top-up soon after a password, factor or contact change", V.CHALLENGE, 500,
          window_seconds=86400),
    # Payment
    _rule("payment.suspended", "store payments suspended by policy", V.DENY, 1000),
    _rule("payment.velocity", "payments of one wallet", V.DENY, 800,
          max_count=10, window_seconds=600),
    _rule("payment.amount", "large payment", V.CHALLENGE, 400, max_amount=30000),
    _rule("payment.merchant_category", "merchant category used to cash out", V.CHALLENGE,
          400),
    _rule("payment.high_risk_basket", "tobacco, gift cards or prepaid cards above an amount",
          V.CHALLENGE, 400, min_amount=5000),
    _rule("payment.after_new_device_top_up", "spend soon after a top-up from a new device",
          V.CHALLENGE, 500, window_seconds=3600),
    # Every kind with an address, and risk's own containment of a stuffing wave
    _rule("policy.blocked_network", "IP in a network the policy blocks", V.DENY, 1000),
    _rule("login.contained_network",
          "password sign-in on a new device from a network contained during a stuffing wave",
          V.THROTTLE, 700),
    # Alerts, evaluated on aggregates by a background job. The stuffing wave is also
    # watched every second over a short window, and contains its networks.
    _rule("alert.stuffing_wave", "failed sign-ins across all IPs", V.ALLOW, 0,
          min_failures=1000, window_seconds=300, min_failures_per_second=20,
          fast_window_seconds=10, contain_min_failures=3, contain_seconds=900,
          contain_max_networks=1024),
    _rule("alert.foreign_ip_surge", "sign-in attempts from outside the home countries",
          V.ALLOW, 0, min_attempts=500, window_seconds=300),
    _rule("alert.top_up_spike", "top-up amount across all wallets", V.ALLOW, 0,
          min_amount=10_000_000, window_seconds=600),
    _rule("alert.high_risk_spend_spike", "payments with high-risk baskets", V.ALLOW, 0,
          min_payments=200, window_seconds=600),
)  # fmt: skip

HIGH_RISK_GOODS = frozenset({"tobacco", "gift_card", "prepaid_card"})
# ISO 18245 codes where stolen balances are turned into cash or resold goods.
HIGH_RISK_MERCHANT_CATEGORIES = frozenset({"4829", "5993", "6051", "6540", "7995"})


class RuleBook:
    """The rules in force: defaults overlaid with operators' overrides."""

    def __init__(self, overrides: Iterable[Rule] = ()) -> None:
        self.rules: dict[str, Rule] = {rule.rule_id: rule for rule in DEFAULT_RULES}
        for rule in overrides:
            if rule.rule_id in self.rules:
                default = self.rules[rule.rule_id]
                self.rules[rule.rule_id] = dataclasses.replace(
                    rule,
                    description=default.description,
                    # A threshold added to a rule after an override was stored keeps its default.
                    thresholds={**default.thresholds, **rule.thresholds},
                )

    def __getitem__(self, rule_id: str) -> Rule:
        return self.rules[rule_id]

    def active(self, rule_id: str) -> Rule | None:
        rule = self.rules[rule_id]
        return rule if rule.enabled else None

    def window(self, rule_id: str) -> float:
        return self.rules[rule_id].threshold("window_seconds")
