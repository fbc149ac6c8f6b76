"""The drill's report reads as a verdict with its date and commit, and each check
names the control it proves, with a failure sentence only when it failed."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tests.e2e.drill.report import CONTROLS, DrillReport, DrillSize, control_of
from tests.e2e.drill.scenario import Drill
from tests.e2e.drill.test_incident_drill import REQUIRED_CHECKS


def _report_with(*results: bool) -> DrillReport:
    report = DrillReport(size=DrillSize(), started_at="2026-11-28T01:00:00+00:00", commit="abc")
    holder = SimpleNamespace(report=report)
    for passed in results:
        Drill.checked(
            holder,  # type: ignore[arg-type]
            "ledger_balances",
            passed,
            "0 differences" if passed else "3 differences",
            "the ledger does not balance: money appeared or vanished",
        )
    return report


def test_a_passing_check_names_its_control_and_carries_no_failure_sentence() -> None:
    (check,) = _report_with(True).checks
    assert check.control == "double-entry ledger, reconciled"
    assert check.failure == ""


def test_a_failing_check_says_what_broke_beside_the_control() -> None:
    (check,) = _report_with(False).checks
    assert check.control == "double-entry ledger, reconciled"
    assert check.failure.startswith("the ledger does not balance")
    assert "[ledger_balances]: 3 differences" in check.failure


def test_the_report_opens_with_verdict_date_and_commit() -> None:
    passed = json.loads(_report_with(True, True).to_json())
    assert (passed["verdict"], passed["date"], passed["commit"]) == (
        "PASSED", "2026-11-28T01:00:00+00:00", "abc"
    )  # fmt: skip
    assert list(passed)[:3] == ["verdict", "date", "commit"]
    failed = _report_with(True, False)
    assert json.loads(failed.to_json())["verdict"] == "FAILED"
    assert failed.timeline().startswith("Incident drill FAILED: 2026-11-28T01:00:00+00:00")
    assert json.loads(DrillReport(size=DrillSize()).to_json())["verdict"] == "FAILED"


def test_the_heading_counts_the_replay_addresses_the_settings_give() -> None:
    size = DrillSize(attacker_ips=160, noisy_ips=4)
    heading = DrillReport(size=size).timeline().splitlines()[1]
    assert "164 attacker IPs in the replay (160 spread thin, 4 noisy)" in heading


def test_every_check_the_drill_must_make_names_a_control() -> None:
    assert all(control_of(name) for name in REQUIRED_CHECKS)
    assert control_of("switch_effective:country:CN") == CONTROLS["switch_effective"]
