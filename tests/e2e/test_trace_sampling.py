"""Trace sampling on a real grpc.aio server: the caller's decision holds, and an
unsampled RPC records no span but still logs a trace id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from io import StringIO
from typing import Any

import grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime.logging import configure_logging
from services.runtime.rpc_context import RpcLogInterceptor
from services.runtime.tracing import configure_tracing, server_interceptors, shutdown_tracing

SERVICE = "mamoru.test.v1.SamplingService"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
DEADLINE_SECONDS = 20.0


def traceparent(sampled: bool) -> tuple[tuple[str, str], ...]:
    return (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-{'01' if sampled else '00'}"),)


class Server:
    def __init__(self, channel: grpc.aio.Channel, spans: InMemorySpanExporter, logs: StringIO):
        self.ping = channel.unary_unary(f"/{SERVICE}/Ping")
        self.spans = spans
        self.logs = logs

    async def wait_for(self, found: Callable[[], list[Any]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_SECONDS
        result = found()
        while not result and loop.time() < deadline:
            await asyncio.sleep(0.02)
            result = found()
        return result

    def summaries(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.logs.getvalue().splitlines()]
        return [line for line in lines if line.get("event") == "rpc"]

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())


@asynccontextmanager
async def serving(ratio: float) -> AsyncIterator[Server]:
    logs = StringIO()
    configure_logging("sampling", fmt="json", level="info", stream=logs)
    spans = InMemorySpanExporter()
    configure_tracing("sampling", exporter=spans, sample_ratio=ratio)

    async def ping(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.aio.server(interceptors=[*server_interceptors(), RpcLogInterceptor()])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Ping": grpc.unary_unary_rpc_method_handler(ping)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Server(channel, spans, logs)
    finally:
        await channel.close()
        await server.stop(None)
        shutdown_tracing()


async def test_a_sampled_caller_gets_a_described_span_even_where_new_traces_are_never_sampled():
    async with serving(ratio=0.0) as server:
        await server.ping(b"x", metadata=traceparent(sampled=True))

        (span,) = await server.wait_for(server.finished)
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert span.attributes is not None
        assert span.attributes["rpc.service"] == SERVICE
        assert span.attributes["rpc.method"] == "Ping"
        assert span.attributes["net.peer.ip"] == "127.0.0.1"


async def test_an_unsampled_caller_gets_no_span_but_its_trace_id_in_the_log_line():
    async with serving(ratio=1.0) as server:
        await server.ping(b"x", metadata=traceparent(sampled=False))

        (summary,) = await server.wait_for(server.summaries)
        assert summary["trace_id"] == TRACE_ID
        assert server.finished() == []


async def test_at_ratio_zero_new_traces_record_no_span_and_still_log_a_trace_id():
    async with serving(ratio=0.0) as server:
        for _ in range(5):
            await server.ping(b"x")

        summaries = await server.wait_for(
            lambda: found if len(found := server.summaries()) == 5 else []
        )
        assert len({summary["trace_id"] for summary in summaries}) == 5
        assert server.finished() == []
