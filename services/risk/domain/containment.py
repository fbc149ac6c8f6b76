"""Risk's own containment of a stuffing wave: which networks, until when, and when a
containment grows, is renewed or ends. Every change is a new policy version.

A lift by an operator is final for its alert: risk contains again only for a new
alert, which the stuffing rule raises once the lifted one is resolved or its quiet
period (the rule's window) has passed while the wave goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.risk.domain.policy import Policy, PolicyChange
from services.risk.domain.rules import Rule


@dataclass(frozen=True)
class NetworkFailures:
    """A /24 (IPv4) or /48 (IPv6) and its failed sign-ins in the wave window."""

    network: str
    failures: int


@dataclass(frozen=True)
class ContainmentRule:
    """The stuffing rule's containment thresholds."""

    min_failures: int  # per network, in the wave window
    seconds: float  # how long a containment lasts unless the wave renews it
    max_networks: int  # at most this many networks, those with the most failures; 0 = off

    @classmethod
    def of(cls, rule: Rule) -> ContainmentRule:
        return cls(
            min_failures=max(1, int(rule.threshold("contain_min_failures"))),
            seconds=rule.threshold("contain_seconds"),
            max_networks=max(0, int(rule.threshold("contain_max_networks"))),
        )


def contain(
    policy: Policy,
    alert_id: str,
    sources: Sequence[NetworkFailures],
    now: datetime,
    rule: ContainmentRule,
) -> PolicyChange | None:
    """The containment for ``alert_id`` given the wave's ``sources`` now, or None when
    the policy needs no new version.

    The contained set only grows while the alert lasts; when more networks qualify
    than ``max_networks``, those with the most failures are kept and the rest stay
    under the per-address and per-subnet limits. The end moves to ``now + seconds``
    whenever the set grows or half the time is gone, so a wave that goes on keeps
    its networks contained with a new version every few minutes, not every pass.
    """
    if rule.max_networks == 0 or not alert_id or policy.lifted_containment_alert_id == alert_id:
        return None
    ours = policy.containment_alert_id == alert_id and policy.containment_active(now)
    current = set(policy.contained_networks) if ours else set()
    networks = set(current)
    for source in sorted(sources, key=lambda s: (-s.failures, s.network)):
        if len(networks) >= rule.max_networks:
            break
        if source.failures >= rule.min_failures:
            networks.add(source.network)
    if not networks:
        return None
    until = policy.containment_until
    half_gone = until is None or until - now < timedelta(seconds=rule.seconds / 2)
    if ours and networks == current and not half_gone:
        return None
    return PolicyChange(
        "containment",
        True,
        key=alert_id,
        networks=tuple(sorted(networks)),
        until=now + timedelta(seconds=rule.seconds),
    )


def end_of_containment(policy: Policy, now: datetime) -> PolicyChange | None:
    """Ending a containment whose time has passed, or None."""
    if policy.containment_until is None or policy.containment_active(now):
        return None
    return PolicyChange("containment", False, key=policy.containment_alert_id)


SHOWN_NETWORKS = 20


def summary(change: PolicyChange, qualifying: int) -> dict[str, object]:
    """What the alert shows of its containment: how many networks (of how many that
    qualified), the first few, and until when; the policy holds the whole set."""
    shown = list(change.networks[:SHOWN_NETWORKS])
    return {
        "contained_networks": len(change.networks),
        "qualifying_networks": max(qualifying, len(change.networks)),
        "networks": shown,
        "more_networks": len(change.networks) - len(shown),
        "until": None if change.until is None else change.until.isoformat(),
    }
