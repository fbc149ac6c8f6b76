"""Aggregate alert rules: what the whole platform is seeing right now."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.risk.domain.rules import Rule, RuleBook
from services.risk.domain.windows import bucket_of

STUFFING_WAVE = "alert.stuffing_wave"

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
class FailureReading:
    """Failed sign-ins across all IPs per counting bucket, as read at one moment."""

    at: datetime
    by_bucket: Mapping[int, int]

    def since(self, first_bucket: int) -> int:
        return sum(n for bucket, n in self.by_bucket.items() if bucket >= first_bucket)


class RecentFailures:
    """Failed sign-ins recorded in the last few seconds, finer than the 10-second
    counting buckets: the growth of the per-bucket totals between two readings.

    Only buckets of the last window (and the one before) count, so a late backlog of
    old failures (a reporter's outbox catching up) does not look like a wave. The
    first reading sees nothing; until a whole window of readings is kept, the
    growth is over a shorter time, so it never overstates the rate.
    """

    def __init__(self) -> None:
        self._readings: deque[FailureReading] = deque()

    def add(self, reading: FailureReading, window_seconds: float) -> int:
        """Keep ``reading``; failed sign-ins recorded since the oldest reading kept
        that is at most ``window_seconds`` older."""
        cutoff = reading.at - timedelta(seconds=window_seconds)
        while self._readings and (
            self._readings[0].at < cutoff or self._readings[0].at > reading.at
        ):
            self._readings.popleft()
        base = self._readings[0] if self._readings else None
        self._readings.append(reading)
        if base is None:
            return 0
        recent = bucket_of(cutoff) - 1
        return sum(
            max(0, count - base.by_bucket.get(bucket, 0))
            for bucket, count in reading.by_bucket.items()
            if bucket >= recent
        )


@dataclass(frozen=True)
class WaveFired:
    """The stuffing rule fired: on its long window, its short one, or both."""

    alert: FiredAlert
    headline: str


def stuffing_wave(failed_sign_ins: int, recent_failures: int, rules: RuleBook) -> WaveFired | None:
    """The stuffing rule on both its windows: ``min_failures`` failed sign-ins in
    ``window_seconds``, or ``min_failures_per_second`` over the last
    ``fast_window_seconds`` (a wave seen within seconds of its start)."""
    rule = rules.active(STUFFING_WAVE)
    if rule is None:
        return None
    fast_window = max(rule.threshold("fast_window_seconds"), 1.0)
    per_second = recent_failures / fast_window
    evidence: dict[str, object] = {
        "failed_sign_ins": float(failed_sign_ins),
        "min_failures": rule.threshold("min_failures"),
        "window_seconds": rule.threshold("window_seconds"),
        "failures_per_second": per_second,
        "min_failures_per_second": rule.threshold("min_failures_per_second"),
        "fast_window_seconds": fast_window,
    }
    if failed_sign_ins >= rule.threshold("min_failures"):
        observed, threshold = float(failed_sign_ins), rule.threshold("min_failures")
        headline = f"{rule.description}: {observed:g} (threshold {threshold:g})"
    elif per_second >= rule.threshold("min_failures_per_second"):
        observed, threshold = per_second, rule.threshold("min_failures_per_second")
        headline = (
            f"{rule.description}: {observed:g}/s over the last {fast_window:g} s "
            f"(threshold {threshold:g}/s)"
        )
    else:
        return None
    return WaveFired(FiredAlert(rule, observed, threshold, evidence), headline)


@dataclass(frozen=True)
class Alert:
    alert_id: uuid.UUID
    rule_id: str
    status: str
    raised_at: datetime
    evidence: dict[str, Any]
    auto_action_taken: str
