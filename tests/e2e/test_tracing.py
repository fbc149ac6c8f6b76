"""Two real grpc.aio servers: alpha's handler calls bravo, the way services call each other.

Both run in this process, so they share one log stream (one ``service`` value)
and are told apart by ``rpc_method``; each has its own tracer provider.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from io import StringIO
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.runtime.logging import configure_logging, get_logger
from services.runtime.rpc_context import RpcLogInterceptor, request_id_client_interceptors
from services.runtime.tracing import (
    client_interceptors,
    configure_tracing,
    server_interceptors,
    shutdown_tracing,
)

ALPHA = "mamoru.test.v1.AlphaService"
BRAVO = "mamoru.test.v1.BravoService"
log_name = "tests.e2e.tracing"
log = get_logger(log_name)


@dataclass
class Cluster:
    alpha: grpc.aio.Channel
    bravo: grpc.aio.Channel
    spans: InMemorySpanExporter
    logs: StringIO

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs.getvalue().splitlines()]

    async def wait_for_lines(
        self, match: Callable[[dict[str, Any]], bool], count: int
    ) -> list[dict[str, Any]]:
        # A status sent by abort can reach the client before the server has
        # finished the RPC, so its summary line and span may land a moment later.
        for _ in range(200):
            found = [line for line in self.lines() if match(line)]
            if len(found) >= count:
                await asyncio.sleep(0.05)
                return [line for line in self.lines() if match(line)]
            await asyncio.sleep(0.025)
        return [line for line in self.lines() if match(line)]

    async def wait_for_spans(self, count: int) -> list[ReadableSpan]:
        for _ in range(200):
            if len(self.spans.get_finished_spans()) >= count:
                break
            await asyncio.sleep(0.025)
        return list(self.spans.get_finished_spans())


def with_request_id(request_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("request_id") == request_id


def summaries_of(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_method: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line["event"] == "rpc":
            by_method.setdefault(line["rpc_method"], []).append(line)
    return by_method


# bravo: the callee


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    sent_ids = [value for key, value in context.invocation_metadata() if key == "x-request-id"]
    log.info("bravo_echoing", size=len(request), request_ids_received=len(sent_ids))
    return request


async def count_to(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for number in range(1, int(request) + 1):
        log.info("bravo_counting", number=number)
        yield str(number).encode()


async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    log.info("bravo_refusing")
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not your wallet")
    raise AssertionError("abort returned")


async def crash(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    log.info("bravo_crashing")
    raise RuntimeError("ledger exploded")


async def not_found(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.NOT_FOUND)
    context.set_details("no such code")
    return b""


async def wait_forever(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.Event().wait()
    raise AssertionError("the event is never set")


async def crash_mid_stream(
    request: bytes, context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    yield b"first"
    raise RuntimeError("stream broke")


async def add_up(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    total = 0
    async for request in requests:
        total += int(request)
    log.info("bravo_added_up", total=total)
    return str(total).encode()


async def double_each(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    async for request in requests:
        log.info("bravo_doubling")
        yield str(2 * int(request)).encode()


def bravo_handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        BRAVO,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "CountTo": grpc.unary_stream_rpc_method_handler(count_to),
            "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
            "Crash": grpc.unary_unary_rpc_method_handler(crash),
            "NotFound": grpc.unary_unary_rpc_method_handler(not_found),
            "CrashMidStream": grpc.unary_stream_rpc_method_handler(crash_mid_stream),
            "WaitForever": grpc.unary_unary_rpc_method_handler(wait_forever),
            "AddUp": grpc.stream_unary_rpc_method_handler(add_up),
            "DoubleEach": grpc.stream_stream_rpc_method_handler(double_each),
        },
    )


# alpha: the caller


def alpha_handlers(to_bravo: grpc.aio.Channel) -> grpc.GenericRpcHandler:
    async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        log.info("alpha_relaying")
        echoed = await to_bravo.unary_unary(f"/{BRAVO}/Echo")(request)
        counted = [n async for n in to_bravo.unary_stream(f"/{BRAVO}/CountTo")(b"2")]
        log.info("alpha_relayed", counted=len(counted))
        return bytes(echoed)

    async def relay_refusal(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            await to_bravo.unary_unary(f"/{BRAVO}/Refuse")(request)
        except grpc.aio.AioRpcError as error:
            log.info("alpha_was_refused", code=error.code().name)
            await context.abort(error.code(), error.details() or "")
        raise AssertionError("bravo did not refuse")

    async def relay_health_check(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await health_pb2_grpc.HealthStub(to_bravo).Check(health_pb2.HealthCheckRequest())
        return request

    async def relay_as(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = (("x-request-id", request.decode()),)
        return bytes(await to_bravo.unary_unary(f"/{BRAVO}/Echo")(request, metadata=metadata))

    return grpc.method_handlers_generic_handler(
        ALPHA,
        {
            "Relay": grpc.unary_unary_rpc_method_handler(relay),
            "RelayAs": grpc.unary_unary_rpc_method_handler(relay_as),
            "RelayRefusal": grpc.unary_unary_rpc_method_handler(relay_refusal),
            "RelayHealthCheck": grpc.unary_unary_rpc_method_handler(relay_health_check),
        },
    )


async def start_server(
    interceptors: list[grpc.aio.ServerInterceptor], handlers: grpc.GenericRpcHandler
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=[*interceptors, RpcLogInterceptor()])
    server.add_generic_rpc_handlers((handlers,))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    logs = StringIO()
    configure_logging("e2e", fmt="json", level="debug", stream=logs)
    spans = InMemorySpanExporter()

    configure_tracing("bravo", exporter=spans)
    bravo, bravo_port = await start_server(server_interceptors(), bravo_handlers())

    configure_tracing("alpha", exporter=spans)
    alpha_to_bravo = grpc.aio.insecure_channel(
        f"127.0.0.1:{bravo_port}",
        interceptors=[*client_interceptors(), *request_id_client_interceptors()],
    )
    alpha, alpha_port = await start_server(server_interceptors(), alpha_handlers(alpha_to_bravo))

    # The test's own channels carry no trace context: a trace shared by alpha and
    # bravo can only come from alpha's outgoing call.
    to_alpha = grpc.aio.insecure_channel(f"127.0.0.1:{alpha_port}")
    to_bravo = grpc.aio.insecure_channel(f"127.0.0.1:{bravo_port}")
    try:
        yield Cluster(alpha=to_alpha, bravo=to_bravo, spans=spans, logs=logs)
    finally:
        for channel in (to_alpha, to_bravo, alpha_to_bravo):
            await channel.close()
        await alpha.stop(None)
        await bravo.stop(None)
        shutdown_tracing()


@pytest.fixture
def fresh_spans(cluster: Cluster) -> InMemorySpanExporter:
    cluster.spans.clear()
    return cluster.spans


async def test_one_request_id_and_one_trace_follow_a_call_across_both_servers(
    cluster: Cluster, fresh_spans: InMemorySpanExporter
):
    request_id = "req-relay-1"

    reply = await cluster.alpha.unary_unary(f"/{ALPHA}/Relay")(
        b"hello", metadata=(("x-request-id", request_id),)
    )

    assert reply == b"hello"
    lines = await cluster.wait_for_lines(with_request_id(request_id), count=8)
    summaries = summaries_of(lines)
    assert set(summaries) == {f"/{ALPHA}/Relay", f"/{BRAVO}/Echo", f"/{BRAVO}/CountTo"}
    for method, method_summaries in summaries.items():
        assert len(method_summaries) == 1, method
        (summary,) = method_summaries
        assert summary["code"] == "OK"
        assert summary["level"] == "info"
        assert isinstance(summary["duration_ms"], float)
        assert summary["duration_ms"] >= 0
        assert summary["peer"].startswith("ipv4:127.0.0.1:")

    handler_lines = [
        (line["event"], line["rpc_method"]) for line in lines if line["logger"] == log_name
    ]
    assert handler_lines == [
        ("alpha_relaying", f"/{ALPHA}/Relay"),
        ("bravo_echoing", f"/{BRAVO}/Echo"),
        ("bravo_counting", f"/{BRAVO}/CountTo"),
        ("bravo_counting", f"/{BRAVO}/CountTo"),
        ("alpha_relayed", f"/{ALPHA}/Relay"),
    ]
    for line in lines:
        assert line["service"] == "e2e"
        assert line["request_id"] == request_id
        assert len(line["trace_id"]) == 32

    spans = await cluster.wait_for_spans(count=5)
    server_spans = {span.name: span for span in spans if span.kind is SpanKind.SERVER}
    assert set(server_spans) == set(summaries)
    client_spans = [span for span in spans if span.kind is SpanKind.CLIENT]
    assert len(client_spans) == 2
    trace_ids = {span.context.trace_id for span in spans}
    assert len(trace_ids) == 1
    (trace_id,) = trace_ids
    assert {line["trace_id"] for line in lines} == {f"{trace_id:032x}"}
    assert server_spans[f"/{ALPHA}/Relay"].resource.attributes["service.name"] == "mamoru-alpha"
    assert server_spans[f"/{BRAVO}/Echo"].resource.attributes["service.name"] == "mamoru-bravo"
    echo_parent = server_spans[f"/{BRAVO}/Echo"].parent
    assert echo_parent is not None
    assert echo_parent.span_id in {span.context.span_id for span in client_spans}


async def test_a_server_without_a_request_id_makes_one_and_passes_it_on(cluster: Cluster):
    await cluster.alpha.unary_unary(f"/{ALPHA}/Relay")(b"anonymous")

    relay_summaries = await cluster.wait_for_lines(
        lambda line: (
            line["event"] == "rpc"
            and line["rpc_method"] == f"/{ALPHA}/Relay"
            and line.get("request_id") not in (None, "req-relay-1")
        ),
        count=1,
    )
    (relay_summary,) = relay_summaries
    request_id = relay_summary["request_id"]
    assert uuid.UUID(request_id)
    echo_lines = await cluster.wait_for_lines(with_request_id(request_id), count=8)
    assert {line["rpc_method"] for line in echo_lines} == {
        f"/{ALPHA}/Relay",
        f"/{BRAVO}/Echo",
        f"/{BRAVO}/CountTo",
    }


async def test_a_request_id_that_is_not_a_short_token_is_replaced(cluster: Cluster):
    forged = 'x" level=critical "' + "a" * 100

    await cluster.bravo.unary_unary(f"/{BRAVO}/Echo")(b"1", metadata=(("x-request-id", forged),))

    lines = await cluster.wait_for_lines(
        lambda line: line["event"] == "bravo_echoing" and line["request_id"] != "req-relay-1",
        count=1,
    )
    ids = {line["request_id"] for line in lines}
    assert forged not in ids
    assert all(uuid.UUID(request_id) for request_id in ids)


@pytest.mark.parametrize(
    ("method", "code", "level"),
    [
        ("Refuse", grpc.StatusCode.PERMISSION_DENIED, "info"),
        ("NotFound", grpc.StatusCode.NOT_FOUND, "info"),
        ("Crash", grpc.StatusCode.UNKNOWN, "warning"),
        ("CrashMidStream", grpc.StatusCode.UNKNOWN, "warning"),
    ],
)
async def test_a_failed_rpc_is_summarised_with_the_status_the_client_received(
    cluster: Cluster, method: str, code: grpc.StatusCode, level: str
):
    request_id = f"req-{method}"
    metadata = (("x-request-id", request_id),)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        if method == "CrashMidStream":
            call = cluster.bravo.unary_stream(f"/{BRAVO}/{method}")(b"", metadata=metadata)
            async for _ in call:
                pass
        else:
            await cluster.bravo.unary_unary(f"/{BRAVO}/{method}")(b"", metadata=metadata)

    assert raised.value.code() is code
    lines = await cluster.wait_for_lines(
        lambda line: line.get("request_id") == request_id and line["event"] == "rpc", count=1
    )
    (summary,) = lines
    assert summary["rpc_method"] == f"/{BRAVO}/{method}"
    assert summary["code"] == code.name
    assert summary["level"] == level
    assert ("exception" in summary) is (code is grpc.StatusCode.UNKNOWN)


async def test_a_raising_handler_leaves_an_error_span_not_an_ok_one(
    cluster: Cluster, fresh_spans: InMemorySpanExporter
):
    with pytest.raises(grpc.aio.AioRpcError):
        await cluster.bravo.unary_unary(f"/{BRAVO}/Crash")(b"")

    (span,) = await cluster.wait_for_spans(count=1)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNKNOWN.value[0]


async def test_an_abort_relayed_through_alpha_is_logged_on_both_servers(cluster: Cluster):
    request_id = "req-relay-refusal"

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await cluster.alpha.unary_unary(f"/{ALPHA}/RelayRefusal")(
            b"", metadata=(("x-request-id", request_id),)
        )

    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    lines = await cluster.wait_for_lines(with_request_id(request_id), count=4)
    summaries = summaries_of(lines)
    assert {method: [s["code"] for s in found] for method, found in summaries.items()} == {
        f"/{ALPHA}/RelayRefusal": ["PERMISSION_DENIED"],
        f"/{BRAVO}/Refuse": ["PERMISSION_DENIED"],
    }
    assert len({line["trace_id"] for line in lines}) == 1


async def test_streaming_requests_are_summarised_once_per_rpc(cluster: Cluster):
    metadata = (("x-request-id", "req-streams"),)

    async def numbers() -> AsyncIterator[bytes]:
        for number in (b"1", b"2", b"3"):
            yield number

    total = await cluster.bravo.stream_unary(f"/{BRAVO}/AddUp")(numbers(), metadata=metadata)
    doubled = [
        reply
        async for reply in cluster.bravo.stream_stream(f"/{BRAVO}/DoubleEach")(
            numbers(), metadata=metadata
        )
    ]

    assert total == b"6"
    assert doubled == [b"2", b"4", b"6"]
    lines = await cluster.wait_for_lines(with_request_id("req-streams"), count=6)
    summaries = summaries_of(lines)
    assert {method: [s["code"] for s in found] for method, found in summaries.items()} == {
        f"/{BRAVO}/AddUp": ["OK"],
        f"/{BRAVO}/DoubleEach": ["OK"],
    }
    assert [line["event"] for line in lines if line["logger"] == log_name] == [
        "bravo_added_up",
        "bravo_doubling",
        "bravo_doubling",
        "bravo_doubling",
    ]


async def test_a_call_past_its_deadline_is_summarised_as_deadline_exceeded(cluster: Cluster):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await cluster.bravo.unary_unary(f"/{BRAVO}/WaitForever")(
            b"", timeout=0.2, metadata=(("x-request-id", "req-too-slow"),)
        )

    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    (summary,) = await cluster.wait_for_lines(with_request_id("req-too-slow"), count=1)
    assert summary["event"] == "rpc"
    assert summary["code"] == "DEADLINE_EXCEEDED"
    assert summary["level"] == "info"


async def test_a_request_id_set_explicitly_on_an_outgoing_call_is_kept(cluster: Cluster):
    await cluster.alpha.unary_unary(f"/{ALPHA}/RelayAs")(
        b"req-batch-7", metadata=(("x-request-id", "req-outer"),)
    )

    lines = await cluster.wait_for_lines(with_request_id("req-batch-7"), count=2)
    (echo_line,) = [line for line in lines if line["event"] == "bravo_echoing"]
    assert echo_line["rpc_method"] == f"/{BRAVO}/Echo"
    assert echo_line["request_ids_received"] == 1


async def test_a_call_to_an_unknown_method_is_summarised_as_unimplemented(cluster: Cluster):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await cluster.bravo.unary_unary(f"/{BRAVO}/Missing")(
            b"", metadata=(("x-request-id", "req-missing"),)
        )

    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
    (summary,) = await cluster.wait_for_lines(with_request_id("req-missing"), count=1)
    assert summary["event"] == "rpc"
    assert summary["rpc_method"] == f"/{BRAVO}/Missing"
    assert summary["code"] == "UNIMPLEMENTED"


async def test_health_checks_are_not_traced_on_either_side_of_a_call(
    cluster: Cluster, fresh_spans: InMemorySpanExporter
):
    # Alpha's handler checks bravo's health over its traced channel: neither the
    # client side (alpha) nor the server side (bravo) of that check records a span.
    await cluster.alpha.unary_unary(f"/{ALPHA}/RelayHealthCheck")(b"ping")
    await health_pb2_grpc.HealthStub(cluster.bravo).Check(health_pb2.HealthCheckRequest())
    await cluster.bravo.unary_unary(f"/{BRAVO}/Echo")(b"after")

    spans = await cluster.wait_for_spans(count=2)
    assert sorted(span.name for span in spans) == sorted(
        [f"/{ALPHA}/RelayHealthCheck", f"/{BRAVO}/Echo"]
    )
