"""A retrying background job logs an outage once and a bug every time."""

from __future__ import annotations

import asyncpg
import structlog
from structlog.testing import capture_logs

from services.runtime.outages import OutageLog


def test_an_outage_is_one_line_without_a_traceback_and_its_end_one_more():
    outage = OutageLog(structlog.get_logger("tests.unit"), "outbox.relay_error")
    with capture_logs() as logs:
        for _ in range(5):
            outage.failed(ConnectionRefusedError(111, "Connect call failed\nsecond line"))
        outage.ok()
        outage.ok()
        outage.failed(asyncpg.CannotConnectNowError("the database system is starting up"))

    warnings = [line for line in logs if line["log_level"] == "warning"]
    assert [line["event"] for line in warnings] == ["outbox.relay_error", "outbox.relay_error"]
    assert all("exc_info" not in line and "\n" not in line["reason"] for line in warnings)
    assert warnings[0]["kind"] == "STORAGE_UNAVAILABLE"
    recovered = [line for line in logs if line["event"] == "outbox.relay_error.recovered"]
    assert len(recovered) == 1


def test_a_bug_is_logged_with_its_traceback_every_time():
    outage = OutageLog(structlog.get_logger("tests.unit"), "notify.worker_error")
    with capture_logs() as logs:
        for _ in range(3):
            outage.failed(KeyError("template"))

    assert [line["log_level"] for line in logs] == ["error"] * 3
    assert all(isinstance(line["exc_info"], KeyError) for line in logs)
