"""A decision in the making: the rules that fired, what they saw, and the verdict."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.risk.domain.rules import Rule, Verdict


@dataclass(frozen=True)
class Reason:
    rule_id: str
    observed: float
    threshold: float
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {
            "rule_id": self.rule_id,
            "observed": self.observed,
            "threshold": self.threshold,
            "detail": self.detail,
        }


@dataclass
class Assessment:
    """Collects the rules that fire; the strictest verdict wins, scores add up to 1000."""

    reasons: list[Reason] = field(default_factory=list)
    verdict: Verdict = Verdict.ALLOW
    score: int = 0

    def fire(self, rule: Rule | None, observed: float, threshold: float, detail: str) -> None:
        if rule is None:
            return
        self.reasons.append(Reason(rule.rule_id, float(observed), float(threshold), detail))
        self.verdict = max(self.verdict, rule.verdict)
        self.score = min(1000, self.score + int(rule.thresholds.get("score", 0)))

    def at_least(
        self, rule: Rule | None, observed: float, threshold_name: str, detail: str
    ) -> None:
        """Fire ``rule`` when ``observed`` reaches its threshold ``threshold_name``."""
        if rule is None:
            return
        limit = rule.threshold(threshold_name)
        if observed >= limit:
            self.fire(rule, observed, limit, detail)


@dataclass(frozen=True)
class StoredDecision:
    """A decision as it is kept: the verdict with what it was based on."""

    decision_id: uuid.UUID
    kind: str
    verdict: Verdict
    score: int
    reasons: Sequence[Reason]
    inputs: dict[str, Any]
    country_code: str
    account_id: str
    ip: str
    decided_at: datetime
