"""The capacity model turns a run's cost per operation into cores, replicas and primaries."""

from __future__ import annotations

import json

import pytest

from bench.capacity import RECORDED, Scale, costs_from_results, main, plan, primary_load


def results_file() -> dict[str, object]:
    return {
        "command": "python -m bench --size full",
        "finished_at": "2026-11-28T00:00:00+00:00",
        "machine": {"cores": 4},
        "pgbench": {"tps": 4000.0},
        "payments": {
            "cpu_ms_per_payment": {
                "wallet": 10.0,
                "notify": 5.0,
                "risk": 4.0,
                "identity": 2.0,
                "postgres": 8.0,
                "load generators": 1.0,
            },
            "database_transactions_per_payment": {"wallet": 10.0, "risk": 5.0},
        },
        "risk": {"cpu_ms_per_assessment": {"risk": 1.0, "postgres": 0.5, "load generators": 0.3}},
        "stuffing": {
            "hashing": {"cpu_ms_per_hash": 20.0, "attacker_share_of_attempts_hashed": 0.5}
        },
        "forced_reset": {"accounts_per_second": 5500.0},
    }


def test_cores_are_rate_times_cost_and_load_generators_are_left_out():
    costs = costs_from_results(results_file(), "test run")
    scale = Scale(stores=3600, payments_per_store_hour=1, sign_ups=0, stuffing_per_second=100)

    cores = plan(costs, scale, share_hashed=0.5).cores

    # 1 payment/s, 100 assessments/s, 50 hashes/s.
    assert cores["wallet"] == pytest.approx(0.010)
    assert cores["risk"] == pytest.approx(0.004 + 0.1)
    assert cores["identity"] == pytest.approx(0.002 + 50 * 0.020)
    assert cores["postgres"] == pytest.approx(0.008 + 0.05)
    assert "load generators" not in cores


def test_replicas_follow_cores_but_never_fall_below_production_three():
    scale = Scale(stuffing_per_second=1000)
    everything_hashed = plan(RECORDED, scale, share_hashed=1.0)
    assert everything_hashed.replicas("identity") > 3 * everything_hashed.replicas("wallet")
    assert plan(RECORDED, Scale(stores=1), share_hashed=0.0).replicas("wallet") == 3


def test_each_primary_is_sized_against_pgbench_per_core():
    costs = costs_from_results(results_file(), "test run")
    load = primary_load(costs, Scale(stores=3600, payments_per_store_hour=100))
    # 100 payments/s x 10 transactions against 1,000 tps per core.
    assert load["wallet"] == pytest.approx((1000.0, 1.0))
    assert load["risk"] == pytest.approx((500.0, 0.5))


def test_the_document_names_the_incident_scale_and_its_first_limit(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(results_file()))
    out = tmp_path / "capacity.md"

    assert main(["--results", str(results), "--out", str(out)]) == 0

    text = out.read_text()
    assert "python -m bench --size full" in text
    assert "21,000 stores" in text and "1,500,000 in 3 days" in text
    assert "1,000 attempts/s" in text
    assert "The wallet's primary" in text and "hot merchant" in text
