"""The policy every service enforces: kill switches and the country policy."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

TOP_UP_CHANNELS = ("card", "bank", "cash_register", "atm", "points")
# Payments this small still go through when risk cannot answer in time.
DEFAULT_PAYMENT_FALLBACK_MINOR = 3000
DEFAULT_CURRENCY = "JPY"


@dataclass(frozen=True)
class Policy:
    """One version of the policy; ``version`` grows with every change."""

    version: int = 0
    blocked_countries: frozenset[str] = frozenset()
    registration_suspended: bool = False
    external_login_suspended_providers: frozenset[str] = frozenset()
    top_up_suspended_channels: frozenset[str] = frozenset()
    payments_suspended: bool = False
    wind_down: bool = False
    payment_fallback_limit_minor: int = DEFAULT_PAYMENT_FALLBACK_MINOR
    payment_fallback_currency: str = DEFAULT_CURRENCY
    suspended_partners: frozenset[str] = frozenset()
    updated_at: datetime | None = None

    def to_document(self) -> dict[str, Any]:
        """The stored form (version and time are kept beside it)."""
        return {
            "blocked_countries": sorted(self.blocked_countries),
            "registration_suspended": self.registration_suspended,
            "external_login_suspended_providers": sorted(self.external_login_suspended_providers),
            "top_up_suspended_channels": sorted(self.top_up_suspended_channels),
            "payments_suspended": self.payments_suspended,
            "wind_down": self.wind_down,
            "payment_fallback_limit": {
                "amount_minor": self.payment_fallback_limit_minor,
                "currency": self.payment_fallback_currency,
            },
            "suspended_partners": sorted(self.suspended_partners),
        }

    @classmethod
    def from_document(
        cls, version: int, document: dict[str, Any], updated_at: datetime | None
    ) -> Policy:
        limit = document.get("payment_fallback_limit") or {}
        return cls(
            version=version,
            blocked_countries=frozenset(document.get("blocked_countries", ())),
            registration_suspended=bool(document.get("registration_suspended", False)),
            external_login_suspended_providers=frozenset(
                document.get("external_login_suspended_providers", ())
            ),
            top_up_suspended_channels=frozenset(document.get("top_up_suspended_channels", ())),
            payments_suspended=bool(document.get("payments_suspended", False)),
            wind_down=bool(document.get("wind_down", False)),
            payment_fallback_limit_minor=int(
                limit.get("amount_minor", DEFAULT_PAYMENT_FALLBACK_MINOR)
            ),
            payment_fallback_currency=str(limit.get("currency", DEFAULT_CURRENCY)),
            suspended_partners=frozenset(document.get("suspended_partners", ())),
            updated_at=updated_at,
        )


@dataclass(frozen=True)
class PolicyChange:
    """Exactly one switch flipped. ``key`` names the country, provider or channel."""

    switch: str
    value: bool | int
    key: str = ""
    currency: str = DEFAULT_CURRENCY

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"switch": self.switch, "value": self.value}
        if self.key:
            described["key"] = self.key
        if self.switch == "payment_fallback_limit":
            described["currency"] = self.currency
        return described


@dataclass(frozen=True)
class PolicyChangeRecord:
    """One audited change of the policy or of a rule: who, why, what, when."""

    change_id: uuid.UUID
    actor: str
    reason: str
    change: dict[str, Any]
    policy_version: int
    changed_at: datetime


SWITCHES = (
    "country",
    "registration_suspended",
    "external_login",
    "top_up_channel",
    "payments_suspended",
    "wind_down",
    "payment_fallback_limit",
    "partner",
)


def apply_change(policy: Policy, change: PolicyChange) -> Policy:
    """The next version of ``policy`` with ``change`` applied."""
    on = bool(change.value)
    updates: dict[str, Any]
    if change.switch == "country":
        updates = {"blocked_countries": _toggle(policy.blocked_countries, change.key, on)}
    elif change.switch == "external_login":
        updates = {
            "external_login_suspended_providers": _toggle(
                policy.external_login_suspended_providers, change.key, on
            )
        }
    elif change.switch == "top_up_channel":
        if change.key not in TOP_UP_CHANNELS:
            raise ValueError(f"unknown top-up channel {change.key!r}")
        updates = {
            "top_up_suspended_channels": _toggle(policy.top_up_suspended_channels, change.key, on)
        }
    elif change.switch == "partner":
        updates = {"suspended_partners": _toggle(policy.suspended_partners, change.key, on)}
    elif change.switch in ("registration_suspended", "payments_suspended", "wind_down"):
        updates = {change.switch: on}
    elif change.switch == "payment_fallback_limit":
        updates = {
            "payment_fallback_limit_minor": int(change.value),
            "payment_fallback_currency": change.currency,
        }
    else:
        raise ValueError(f"unknown switch {change.switch!r}")
    return dataclasses.replace(policy, version=policy.version + 1, **updates)


def parse_switch(text: str) -> PolicyChange:
    """An automatic action as rules store it: ``wind_down``, ``top_up_channel:card``,
    ``external_login:line``, ``partner:ID``, ``country:XX``, ``payments_suspended``,
    ``registration_suspended``.
    Turning a switch on is the only automatic action: only a person turns one off."""
    switch, _, key = text.partition(":")
    if switch in ("registration_suspended", "payments_suspended", "wind_down") and not key:
        return PolicyChange(switch=switch, value=True)
    if switch == "top_up_channel" and key in TOP_UP_CHANNELS:
        return PolicyChange(switch=switch, key=key, value=True)
    if switch == "partner" and key:
        return PolicyChange(switch=switch, key=key, value=True)
    if switch == "external_login" and key:
        return PolicyChange(switch=switch, key=key, value=True)
    if switch == "country" and len(key) == 2 and key.isalpha():
        return PolicyChange(switch=switch, key=key.upper(), value=True)
    raise ValueError(f"{text!r} is not a switch")


def _toggle(values: frozenset[str], key: str, on: bool) -> frozenset[str]:
    return values | {key} if on else values - {key}
