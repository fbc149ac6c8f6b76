import json
import logging
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from services.runtime.config import Secret
from services.runtime.logging import configure_logging, get_logger


class TerminalStream(StringIO):
    def isatty(self) -> bool:
        return True


def json_lines(stream: StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_off_a_terminal_carry_service_timestamp_and_level():
    stream = StringIO()
    configure_logging("wallet", stream=stream)

    get_logger("tests.unit").info("top_up_accepted", amount=500)

    (line,) = json_lines(stream)
    assert line["event"] == "top_up_accepted"
    assert line["amount"] == 500
    assert line["service"] == "wallet"
    assert line["level"] == "info"
    assert line["logger"] == "tests.unit"
    stamp = datetime.fromisoformat(str(line["timestamp"]))
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=5)


def test_standard_library_records_come_out_in_the_same_json_format():
    stream = StringIO()
    configure_logging("notify", stream=stream)

    logging.getLogger("aiosmtpd.test").warning("peer %s dropped the connection", "10.0.0.7")

    (line,) = json_lines(stream)
    assert line["event"] == "peer 10.0.0.7 dropped the connection"
    assert line["service"] == "notify"
    assert line["level"] == "warning"
    assert line["logger"] == "aiosmtpd.test"
    assert "timestamp" in line


def test_a_secret_logged_as_a_value_shows_no_secret():
    for fmt in ("json", "console"):
        stream = StringIO()
        configure_logging("identity", fmt=fmt, stream=stream)

        get_logger().info("settings_loaded", database_url=Secret("postgresql://app:hunter2@db/x"))

        assert "settings_loaded" in stream.getvalue()
        assert "hunter2" not in stream.getvalue(), fmt


def test_a_terminal_gets_the_console_renderer_instead_of_json():
    stream = TerminalStream()
    configure_logging("risk", stream=stream)

    get_logger().info("policy_applied", country="JP")

    output = stream.getvalue()
    assert "policy_applied" in output
    assert "JP" in output
    with pytest.raises(json.JSONDecodeError):
        json.loads(output.splitlines()[0])


def test_configuring_again_replaces_the_output_instead_of_adding_one():
    first, second = StringIO(), StringIO()
    configure_logging("wallet", stream=first)
    configure_logging("wallet", stream=second)

    get_logger().info("payment_captured")
    logging.getLogger("grpc.test").info("channel ready")

    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second)] == ["payment_captured", "channel ready"]


def test_lines_below_the_configured_level_are_dropped():
    stream = StringIO()
    configure_logging("risk", level="warning", stream=stream)

    get_logger().info("assessment_done")
    logging.getLogger("asyncpg.test").info("pool resized")
    get_logger().warning("kill_switch_on")

    assert [line["event"] for line in json_lines(stream)] == ["kill_switch_on"]


def test_context_variables_and_the_active_span_appear_on_every_line():
    stream = StringIO()
    configure_logging("wallet", stream=stream)
    tracer = TracerProvider().get_tracer("tests.unit")

    with (
        structlog.contextvars.bound_contextvars(request_id="req-42"),
        tracer.start_as_current_span("capture") as span,
    ):
        get_logger().info("ledger_posted")
        logging.getLogger("asyncpg.test").info("query done")
    get_logger().info("after_the_span")

    inside_structlog, inside_stdlib, after = json_lines(stream)
    span_context = span.get_span_context()
    for line in (inside_structlog, inside_stdlib):
        assert line["request_id"] == "req-42"
        assert line["trace_id"] == f"{span_context.trace_id:032x}"
        assert line["span_id"] == f"{span_context.span_id:016x}"
    assert "trace_id" not in after
    assert "request_id" not in after


def test_exceptions_are_written_as_structured_tracebacks():
    stream = StringIO()
    configure_logging("identity", stream=stream)

    try:
        raise LookupError("contact missing")
    except LookupError:
        get_logger().exception("contact_lookup_failed")

    (line,) = json_lines(stream)
    assert line["level"] == "error"
    assert "LookupError" in json.dumps(line["exception"])
    assert "contact missing" in json.dumps(line["exception"])


def test_an_unknown_format_or_level_is_refused():
    with pytest.raises(ValueError, match="format"):
        configure_logging("wallet", fmt="xml", stream=StringIO())
    with pytest.raises(ValueError, match="level"):
        configure_logging("wallet", level="verbose", stream=StringIO())


def test_a_library_retrying_against_a_server_that_is_away_writes_one_line_not_a_traceback():
    stream = StringIO()
    configure_logging("wallet", fmt="json", stream=stream)

    try:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
    except ConnectionRefusedError:
        logging.getLogger("asyncpg.pool").warning(
            "Failed to restore the pool connection floor; retrying", exc_info=True
        )

    (line,) = json_lines(stream)
    assert "exception" not in line
    assert "ConnectionRefusedError" in str(line["event"])
    assert "Failed to restore the pool connection floor" in str(line["event"])


def test_a_traceback_in_json_carries_no_local_variables():
    stream = StringIO()
    configure_logging("wallet", fmt="json", stream=stream)
    dsn = "postgresql://mamoru:hunter2-secret@db/wallet"

    try:
        raise RuntimeError(f"cannot reach {dsn.rpartition('@')[2]}")
    except RuntimeError:
        get_logger("tests.unit").exception("pool_failed")

    (line,) = json_lines(stream)
    assert line["exception"]
    assert "hunter2-secret" not in stream.getvalue()
    assert all("locals" not in frame for frame in line["exception"][0]["frames"])  # type: ignore[index]


def test_a_logger_kept_from_before_follows_a_new_output_and_level():
    first, second = StringIO(), StringIO()
    configure_logging("wallet", stream=first)
    kept = get_logger("tests.kept")
    kept.info("before")

    configure_logging("notify", level="warning", stream=second)
    kept.info("dropped_at_warning")
    kept.warning("after")

    assert [line["event"] for line in json_lines(first)] == ["before"]
    (line,) = json_lines(second)
    assert (line["event"], line["service"], line["logger"]) == ("after", "notify", "tests.kept")


def test_a_line_that_cannot_be_written_never_fails_the_code_that_logged_it():
    stream = StringIO()
    configure_logging("identity", stream=stream)
    stream.close()
    try:
        get_logger("tests.unit").warning("outbox_relay_waiting")
        logging.getLogger("asyncpg.test").warning("connection lost")
    finally:
        # Later tests, and the libraries' exit hooks, log to an open stream again.
        configure_logging("identity", stream=StringIO())
