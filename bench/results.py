"""Latency samples, percentiles, figures next to their targets, and the results file.

Every figure is printed as a ratio that reads the same on any machine: payments
per second as a share of the pgbench tps measured in the same run, latencies as
a multiple of their target, the forced reset as a multiple of the rate that
resets 1,000,000 accounts in five minutes.
"""

from __future__ import annotations

import json
import math
import os
import platform
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, by nearest rank."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


@dataclass
class Samples:
    """Calls of one kind: when each started (seconds into the run) and how long it took (ms).

    Only successful calls have a latency; failures are counted by reason.
    """

    starts: array[float] = field(default_factory=lambda: array("d"))
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: Counter[str] = field(default_factory=Counter)

    def ok(self, started: float, latency_ms: float) -> None:
        self.starts.append(started)
        self.latencies.append(latency_ms)

    def failed(self, reason: str) -> None:
        self.errors[reason] += 1

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @classmethod
    def merged(cls, parts: Iterable[Samples]) -> Samples:
        total = cls()
        for part in parts:
            total.starts.extend(part.starts)
            total.latencies.extend(part.latencies)
            total.errors.update(part.errors)
        return total

    def summary(self, elapsed_seconds: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "ok": self.count,
            "errors": self.error_count,
            "errors_by_reason": dict(self.errors.most_common()),
            "per_second": self.count / elapsed_seconds if elapsed_seconds > 0 else 0.0,
            "p50_ms": percentile(ordered, 50),
            "p95_ms": percentile(ordered, 95),
            "p99_ms": percentile(ordered, 99),
            "max_ms": ordered[-1] if ordered else math.nan,
        }

    def over_time(self, bucket_seconds: float = 1.0) -> dict[str, list[float]]:
        """Per-bucket p50 and p99 and the rate, for the latency chart."""
        buckets: dict[int, list[float]] = {}
        for started, latency in zip(self.starts, self.latencies, strict=True):
            buckets.setdefault(int(started // bucket_seconds), []).append(latency)
        times, p50, p99, rate = [], [], [], []
        for index in sorted(buckets):
            ordered = sorted(buckets[index])
            times.append(index * bucket_seconds)
            p50.append(percentile(ordered, 50))
            p99.append(percentile(ordered, 99))
            rate.append(len(ordered) / bucket_seconds)
        return {"t": times, "p50_ms": p50, "p99_ms": p99, "per_second": rate}


@dataclass(frozen=True)
class Figure:
    """One measured figure beside its target from docs/architecture.md.

    ``ratio`` is the machine-independent form (for example payments/s over
    pgbench tps); ``of_target`` says how far it is from the target (1.0 = on it).
    """

    name: str
    shown: str
    ratio: float
    target: str
    met: bool
    of_target: float
    # For a figure with a goal and a looser bound that must hold: whether that bound held.
    must_met: bool | None = None

    def line(self) -> str:
        verdict = "met" if self.met else "must ok" if self.must_met else "MISSED"
        return (
            f"  {self.name:<44} {self.shown:<34} target {self.target:<16}"
            f" {verdict:<6} ({self.of_target:.2f}x target)"
        )


def at_least(name: str, shown: str, ratio: float, target: float, target_text: str) -> Figure:
    of_target = ratio / target if target else math.inf
    return Figure(name, shown, ratio, target_text, ratio >= target, of_target)


def at_most(name: str, shown: str, ratio: float, target: float, target_text: str) -> Figure:
    return Figure(name, shown, ratio, target_text, ratio <= target, ratio / target)


def at_most_with_bound(
    name: str, shown: str, value: float, goal: float, must: float, unit: str
) -> Figure:
    """A figure with a goal and a looser bound that must hold (``must`` >= ``goal``)."""
    return Figure(
        name,
        shown,
        value,
        f"<= {goal:g} {unit} (must {must:g})",
        value <= goal,
        value / goal,
        must_met=value <= must,
    )


def exactly_zero(name: str, count: int) -> Figure:
    return Figure(name, f"{count}", float(count), "0", count == 0, float(count))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import psutil

    cpu_model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu_model,
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(results), indent=2, allow_nan=False) + "\n")


def finite(value: float) -> float | None:
    """NaN (no samples) becomes null in the results file."""
    return value if math.isfinite(value) else None


def clean(document: Any) -> Any:
    """Replace NaN and infinities anywhere in ``document`` with None."""
    if isinstance(document, float):
        return finite(document)
    if isinstance(document, dict):
        return {key: clean(value) for key, value in document.items()}
    if isinstance(document, list | tuple):
        return [clean(value) for value in document]
    return document
