"""Aggregate alert rules: what the whole platform is seeing right now."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.risk.domain.rules import Rule, RuleBook

# rule id -> (the aggregate it watches, the threshold name it must reach)
ALERT_RULES: dict[str, tuple[str, str]] = {
    "alert.stuffing_wave": ("failed_sign_ins", "min_failures"),
    "alert.foreign_ip_surge": ("foreign_sign_in_attempts", "min_attempts"),
    "alert.top_up_spike": ("top_up_amount_minor", "min_amount"),
    "alert.high_risk_spend_spike": ("high_risk_payments", "min_payments"),
}


@dataclass(frozen=True)
class FiredAlert:
    rule: Rule
    observed: float
    threshold: float
    evidence: dict[str, object]


def fired_alerts(aggregates: dict[str, float], rules: RuleBook) -> list[FiredAlert]:
    """The alert rules whose aggregate reached its threshold, with their evidence."""
    fired = []
    for rule_id, (aggregate, threshold_name) in ALERT_RULES.items():
        rule = rules.active(rule_id)
        if rule is None:
            continue
        observed = float(aggregates[aggregate])
        threshold = rule.threshold(threshold_name)
        if observed >= threshold:
            evidence: dict[str, object] = {
                aggregate: observed,
                threshold_name: threshold,
                "window_seconds": rule.threshold("window_seconds"),
            }
            fired.append(FiredAlert(rule, observed, threshold, evidence))
    return fired


@dataclass(frozen=True)
class Alert:
    alert_id: uuid.UUID
    rule_id: str
    status: str
    raised_at: datetime
    evidence: dict[str, Any]
    auto_action_taken: str
