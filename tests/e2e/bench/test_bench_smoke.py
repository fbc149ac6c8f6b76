"""The benchmark harness at its smallest size, so `make test` keeps it working.

Figures are never asserted here (benchmarks are not timed tests); only that every
benchmark ran end to end through the real stack and reported what it measures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_every_benchmark_runs_at_smoke_size_and_reports_each_figure_beside_its_target(
    tmp_path: Path,
) -> None:
    results_path = tmp_path / "results.json"
    chart_path = tmp_path / "latency.png"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    finished = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "bench",
            "--size",
            "smoke",
            "--out",
            str(results_path),
            "--chart",
            str(chart_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    results = json.loads(results_path.read_text())

    assert results["pgbench"]["tps"] > 0
    payments = results["payments"]
    assert payments["capture"]["ok"] > 0
    # A payment under risk's fallback limit may pass unassessed when risk is slow.
    assert payments["risk_payment_decisions"] > 0
    assert payments["every_payment_notified"]
    assert payments["payment_notices_delivered"] == payments["capture"]["ok"]
    assert payments["reconcile"]["balanced"]
    assert payments["reconcile"]["differences"] == 0
    assert set(payments["cpu_ms_per_payment"]) >= {"wallet", "risk", "postgres", "total"}

    stuffing = results["stuffing"]
    assert stuffing["takeovers"] == 0
    assert stuffing["attack"]["attempts"] > 0
    assert stuffing["legitimate"]["attempts"] > 0
    assert stuffing["hashing"]["cpu_ms_per_hash"] > 0

    assert results["risk"]["ok"] > 0
    reset = results["forced_reset"]
    assert reset["processed"] == reset["accounts_in_job"] >= reset["accounts_seeded"]
    assert reset["every_notice_queued"]

    names = [figure["name"] for figure in results["figures"]]
    assert len(names) == 18
    for figure in results["figures"]:
        assert figure["target"] and figure["shown"]
        assert figure["name"] in finished.stdout
    assert chart_path.stat().st_size > 0
