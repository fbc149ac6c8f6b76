"""Charts of risk's decisions, drawn on the server as SVG with matplotlib.

Attempts are every assessment risk made; refusals those it answered DENY or
THROTTLE. Both are counted in equal time buckets over the window shown.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import matplotlib
from matplotlib import dates
from matplotlib.figure import Figure

# A Figure without pyplot keeps no global state; a fixed salt keeps the drawing's
# element ids the same for the same data, and text stays text (no glyph paths).
matplotlib.rcParams["svg.hashsalt"] = "mamoru-console"
matplotlib.rcParams["svg.fonttype"] = "none"

REFUSALS = frozenset({"DENY", "THROTTLE"})
VERDICTS = ("ALLOW", "CHALLENGE", "THROTTLE", "DENY")
BUCKETS = 24


@dataclass(frozen=True)
class Point:
    decided_at: datetime
    kind: str
    verdict: str


@dataclass(frozen=True)
class Series:
    starts: list[datetime]
    attempts: list[int]
    refusals: list[int]


def over_time(points: Sequence[Point], now: datetime, window: timedelta) -> Series:
    step = window / BUCKETS
    start = now - window
    starts = [start + step * n for n in range(BUCKETS)]
    attempts, refusals = [0] * BUCKETS, [0] * BUCKETS
    for point in points:
        index = int((point.decided_at - start) / step)
        if 0 <= index < BUCKETS:
            attempts[index] += 1
            refusals[index] += point.verdict in REFUSALS
    return Series(starts, attempts, refusals)


def by_outcome(points: Sequence[Point]) -> dict[str, int]:
    counted = Counter(point.verdict for point in points)
    return {verdict: counted.get(verdict, 0) for verdict in VERDICTS}


def _svg(figure: Figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="svg", bbox_inches="tight")
    return out.getvalue()


def attempts_svg(series: Series) -> bytes:
    figure = Figure(figsize=(8, 3))
    axes = figure.subplots()
    when = dates.date2num(series.starts)  # type: ignore[no-untyped-call]
    axes.plot(when, series.attempts, label="attempts", color="#1f5fa8")
    axes.plot(when, series.refusals, label="refusals", color="#b3261e")
    axes.xaxis.set_major_formatter(dates.DateFormatter("%m-%d %H:%M"))  # type: ignore[no-untyped-call]
    axes.set_ylabel("decisions per bucket")
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    return _svg(figure)


def outcomes_svg(counts: dict[str, int]) -> bytes:
    figure = Figure(figsize=(6, 3))
    axes = figure.subplots()
    colours = ["#2e7d32", "#f9a825", "#ef6c00", "#b3261e"]
    axes.bar(list(counts), list(counts.values()), color=colours[: len(counts)])
    axes.set_ylabel("decisions")
    axes.grid(axis="y", alpha=0.3)
    return _svg(figure)
