"""Database statements follow the trace they run in: recorded in a sampled one, skipped
(no span, no attributes) in one that is not."""

from __future__ import annotations

import asyncpg
from opentelemetry import context, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from services.runtime.tracing import configure_tracing, shutdown_tracing

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def _inside(sampled: bool) -> object:
    parent = SpanContext(
        trace_id=TRACE_ID,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))


async def test_statements_follow_the_callers_sampling_decision_not_the_ratio(new_database):
    spans = InMemorySpanExporter()
    # Ratio 1 would record any root: only the parent's decision keeps these out.
    configure_tracing("wallet", exporter=spans, sample_ratio=1.0)
    conn = await asyncpg.connect(await new_database("traced"))
    try:
        # Connecting runs statements outside any trace; those start traces of their own.
        spans.clear()
        token = _inside(sampled=False)
        try:
            await conn.fetchval("select 1")
            await (await conn.prepare("select 2")).fetchval()
        finally:
            context.detach(token)  # type: ignore[arg-type]
        assert [span.name for span in spans.get_finished_spans()] == []

        token = _inside(sampled=True)
        try:
            await conn.fetchval("select 3")
        finally:
            context.detach(token)  # type: ignore[arg-type]
        (span,) = spans.get_finished_spans()
        assert span.context.trace_id == TRACE_ID
        assert span.name == "select"
    finally:
        await conn.close()
        shutdown_tracing()
