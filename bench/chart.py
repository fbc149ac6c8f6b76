"""The latency-over-time chart: per-second p50 and p99 of each benchmark, with its target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# (results key, title, latency target in ms)
PANELS = (
    ("payments", "Payment capture (hot merchant, risk included)", 25.0),
    ("stuffing", "Sign-ins under a stuffing flood", 300.0),
    ("risk", "Risk AssessLogin", 5.0),
)


def draw(results: dict[str, Any], path: Path) -> bool:
    """Write the chart to ``path``; False when no benchmark produced a series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PANELS if results.get(p[0], {}).get("series")]
    if not panels:
        return False
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for axis, (key, title, target) in zip(axes[:, 0], panels, strict=True):
        for label, series in results[key]["series"].items():
            if not series["t"]:
                continue
            axis.plot(series["t"], series["p50_ms"], label=f"{label} p50", linewidth=1.2)
            axis.plot(series["t"], series["p99_ms"], label=f"{label} p99", linewidth=1.2)
        axis.axhline(
            target, color="red", linestyle="--", linewidth=1, label=f"target {target:g} ms"
        )
        axis.set_yscale("log")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("seconds into the run")
        axis.set_ylabel("latency (ms)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
