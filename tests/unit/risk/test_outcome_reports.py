"""An outcome report as risk reads it off the wire."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

from services.risk.api.convert import outcome_event

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def refusal(**fields: object) -> risk_pb2.RecordOutcomeRequest:
    return risk_pb2.RecordOutcomeRequest(
        outcome=risk_pb2.OUTCOME_PASSWORD_WRONG,
        client=common_pb2.ClientContext(ip_address="203.0.113.9", device_id="bot-1"),
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(("sent", "read"), [(None, 1), (0, 1), (1, 1), (37, 37)])
def test_a_report_stands_for_as_many_failures_as_it_says_and_at_least_one(
    sent: int | None, read: int
):
    request = refusal() if sent is None else refusal(represents=sent)
    event = outcome_event(request, NOW)
    assert event.represents == read
    assert event.outcome == "password_wrong"
    assert event.ip == "203.0.113.9"
