"""Charts of risk's decisions, drawn on the server as SVG with pygal.

Attempts are every assessment risk made; refusals those it answered DENY or
THROTTLE. Both are counted in equal time buckets over the window shown. Pages
show the SVG as an image, where no script runs; pygal's tooltip script is left
out, and the inert settings block it always writes is refused by the chart's own
Content-Security-Policy (``api/security.py``) when the SVG is opened on its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pygal
from pygal.style import Style

REFUSALS = frozenset({"DENY", "THROTTLE"})
VERDICTS = ("ALLOW", "CHALLENGE", "THROTTLE", "DENY")
BUCKETS = 24
_STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#1b1b1b",
    foreground_strong="#1b1b1b",
    foreground_subtle="#5a5a5a",
    font_family="system-ui, sans-serif",
    colors=("#1f5fa8", "#b3261e", "#2e7d32", "#ef6c00"),
)


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


def _options() -> dict[str, object]:
    # pygal would otherwise link its tooltip script from the web.
    return {"style": _STYLE, "js": [], "width": 800, "height": 320, "legend_at_bottom": True}


def attempts_svg(series: Series, label_format: str = "%H:%M") -> bytes:
    chart = pygal.Line(x_label_rotation=30, show_minor_x_labels=False, **_options())
    chart.x_labels = [start.strftime(label_format) for start in series.starts]
    chart.x_labels_major = chart.x_labels[::4]
    chart.add("attempts", series.attempts)
    chart.add("refusals", series.refusals)
    rendered: bytes = chart.render()
    return rendered


def outcomes_svg(counts: dict[str, int]) -> bytes:
    chart = pygal.Bar(show_legend=False, **_options())
    chart.x_labels = [verdict.lower() for verdict in counts]
    chart.add("decisions", list(counts.values()))
    rendered: bytes = chart.render()
    return rendered
