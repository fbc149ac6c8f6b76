"""The policy every service enforces: kill switches, the country and network policy,
and risk's own containment of a stuffing wave."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.risk.domain.network import NetworkSet

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
    blocked_networks: frozenset[str] = frozenset()
    # Risk's containment of a stuffing wave: these networks' new-device password
    # sign-ins are throttled until ``containment_until``, for the alert that raised it.
    contained_networks: frozenset[str] = frozenset()
    containment_until: datetime | None = None
    containment_alert_id: str = ""
    # The last alert whose containment an operator lifted: risk never contains for it again.
    lifted_containment_alert_id: str = ""
    updated_at: datetime | None = None

    @functools.cached_property
    def _blocked(self) -> NetworkSet:
        return NetworkSet(self.blocked_networks)

    @functools.cached_property
    def _contained(self) -> NetworkSet:
        return NetworkSet(self.contained_networks)

    def blocked_network(self, ip: str) -> str | None:
        """The blocked network holding ``ip`` (normalised), or None."""
        return self._blocked.find(ip)

    def containment_active(self, now: datetime) -> bool:
        return self.containment_until is not None and now < self.containment_until

    def contained_network(self, ip: str, now: datetime) -> str | None:
        """The contained network holding ``ip``, while the containment lasts, or None."""
        return self._contained.find(ip) if self.containment_active(now) else None

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
            "blocked_networks": sorted(self.blocked_networks),
            "containment": {
                "networks": sorted(self.contained_networks),
                "until": None
                if self.containment_until is None
                else self.containment_until.isoformat(),
                "alert_id": self.containment_alert_id,
                "lifted_alert_id": self.lifted_containment_alert_id,
            },
        }

    @classmethod
    def from_document(
        cls, version: int, document: dict[str, Any], updated_at: datetime | None
    ) -> Policy:
        limit = document.get("payment_fallback_limit") or {}
        containment = document.get("containment") or {}
        until = containment.get("until")
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
            blocked_networks=frozenset(document.get("blocked_networks", ())),
            contained_networks=frozenset(containment.get("networks", ())),
            containment_until=None if until is None else datetime.fromisoformat(until),
            containment_alert_id=str(containment.get("alert_id", "")),
            lifted_containment_alert_id=str(containment.get("lifted_alert_id", "")),
            updated_at=updated_at,
        )


@dataclass(frozen=True)
class PolicyChange:
    """Exactly one switch flipped. ``key`` names the country, provider, channel, network
    or (for a containment) the alert.

    A containment (risk's own, switch ``containment``) carries the whole contained set
    and when it ends; ``value`` False ends it.
    """

    switch: str
    value: bool | int
    key: str = ""
    currency: str = DEFAULT_CURRENCY
    networks: tuple[str, ...] = ()
    until: datetime | None = None

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"switch": self.switch, "value": self.value}
        if self.key:
            described["key"] = self.key
        if self.switch == "payment_fallback_limit":
            described["currency"] = self.currency
        if self.switch == "containment" and self.value:
            described["networks"] = list(self.networks)
            described["until"] = None if self.until is None else self.until.isoformat()
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
    "network",
    "lift_containment",
    "containment",
)


def audited(change: PolicyChange, before: Policy) -> dict[str, Any]:
    """What the audit trail keeps of ``change``: a lift names what it lifted."""
    described = change.describe()
    if change.switch == "lift_containment":
        described["alert_id"] = before.containment_alert_id
        described["networks"] = len(before.contained_networks)
    return described


_NO_CONTAINMENT: dict[str, Any] = {
    "contained_networks": frozenset(),
    "containment_until": None,
    "containment_alert_id": "",
}


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
    elif change.switch == "network":
        updates = {"blocked_networks": _toggle(policy.blocked_networks, change.key, on)}
    elif change.switch == "lift_containment":
        updates = {
            **_NO_CONTAINMENT,
            "lifted_containment_alert_id": policy.containment_alert_id
            or policy.lifted_containment_alert_id,
        }
    elif change.switch == "containment" and on:
        updates = {
            "contained_networks": frozenset(change.networks),
            "containment_until": change.until,
            "containment_alert_id": change.key,
        }
    elif change.switch == "containment":
        updates = dict(_NO_CONTAINMENT)
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
