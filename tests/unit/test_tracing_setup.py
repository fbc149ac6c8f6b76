import pytest
import wrapt
from asyncpg.connection import Connection
from asyncpg.prepared_stmt import PreparedStatement
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from services.runtime.tracing import configure_tracing, shutdown_tracing


def wrapper_depth(function: object) -> int:
    depth = 0
    while isinstance(function, wrapt.BaseObjectProxy):
        depth += 1
        function = function.__wrapped__
    return depth


def test_shutdown_unpatches_asyncpg_so_tracing_can_be_configured_again():
    configure_tracing("wallet", exporter=InMemorySpanExporter())
    assert wrapper_depth(PreparedStatement.fetch) == 1
    assert wrapper_depth(Connection.fetch) == 1
    shutdown_tracing()
    assert wrapper_depth(PreparedStatement.fetch) == 0
    assert wrapper_depth(Connection.fetch) == 0

    configure_tracing("wallet", exporter=InMemorySpanExporter())
    try:
        assert wrapper_depth(PreparedStatement.fetch) == 1
    finally:
        shutdown_tracing()


def test_the_provider_names_the_service_and_exports_nothing_without_an_endpoint():
    provider = configure_tracing("risk")
    try:
        assert provider.resource.attributes["service.name"] == "mamoru-risk"
        # No endpoint and no exporter: spans are made (trace ids reach the logs)
        # but no processor sends them anywhere.
        assert provider._active_span_processor._span_processors == ()
    finally:
        shutdown_tracing()


def _remote_parent(sampled: bool) -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=flags,
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def test_a_sampled_callers_trace_is_recorded_even_when_the_ratio_is_zero():
    spans = InMemorySpanExporter()
    provider = configure_tracing("wallet", exporter=spans, sample_ratio=0.0)
    try:
        with provider.get_tracer("test").start_as_current_span(
            "child", context=_remote_parent(sampled=True)
        ) as span:
            assert span.is_recording()
        (recorded,) = spans.get_finished_spans()
        assert recorded.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    finally:
        shutdown_tracing()


def test_an_unsampled_callers_trace_is_not_recorded_even_when_the_ratio_is_one():
    spans = InMemorySpanExporter()
    provider = configure_tracing("wallet", exporter=spans, sample_ratio=1.0)
    try:
        with provider.get_tracer("test").start_as_current_span(
            "child", context=_remote_parent(sampled=False), attributes={"a": 1}
        ) as span:
            assert not span.is_recording()
        assert spans.get_finished_spans() == ()
    finally:
        shutdown_tracing()


def test_at_ratio_zero_a_new_trace_records_no_span_but_keeps_a_trace_id_for_logs():
    spans = InMemorySpanExporter()
    provider = configure_tracing("wallet", exporter=spans, sample_ratio=0.0)
    try:
        for _ in range(50):
            with provider.get_tracer("test").start_as_current_span("root") as span:
                assert not span.is_recording()
                assert span.get_span_context().is_valid
        assert spans.get_finished_spans() == ()
    finally:
        shutdown_tracing()


def test_a_sample_ratio_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="sample_ratio"):
        configure_tracing("wallet", sample_ratio=1.5)


def test_a_refusal_leaves_its_status_on_the_server_span_and_no_formatted_traceback():
    import grpc
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import StatusCode

    from services.runtime.errors import Unauthenticated
    from services.runtime.tracing import _AnswerAwareSpan

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("Login") as recording:
        span = _AnswerAwareSpan(recording)
        # What the error mapping does with a refusal: abort while handling it.
        try:
            try:
                raise Unauthenticated("INVALID_CREDENTIALS", "invalid credentials")
            except Unauthenticated:
                raise grpc.aio.AbortError from None
        except grpc.aio.AbortError as abort:
            span.record_exception(abort)
    (refused,) = exporter.get_finished_spans()
    assert [event.name for event in refused.events] == []
    assert refused.attributes is not None
    assert refused.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    # OpenTelemetry's server convention: a refusal is not a server error.
    assert refused.status.status_code is StatusCode.UNSET

    exporter.clear()
    with provider.get_tracer("test").start_as_current_span("Crash") as recording:
        _AnswerAwareSpan(recording).record_exception(RuntimeError("a bug"))
    (crashed,) = exporter.get_finished_spans()
    assert [event.name for event in crashed.events] == ["exception"]
