"""OpenTelemetry traces across every gRPC hop and database call.

``configure_tracing`` builds the process's tracer provider; the gRPC server and
channel builders pass ``server_interceptors()`` / ``client_interceptors()`` in,
which come from ``opentelemetry-instrumentation-grpc``, so W3C trace context
travels in the call metadata and one trace spans every service a request touches.
Spans are exported over OTLP/gRPC only when an endpoint is configured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import unquote

import grpc
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.instrumentation.grpc._aio_server import OpenTelemetryAioServerInterceptor
from opentelemetry.instrumentation.grpc._utilities import _server_status
from opentelemetry.instrumentation.grpc.version import __version__ as _grpc_instrumentation_version
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.semconv._incubating.attributes.rpc_attributes import RPC_GRPC_STATUS_CODE
from wrapt import ObjectProxy

from services.runtime.errors import DomainError

# The provider the interceptor factories hand to OpenTelemetry, and every provider
# made in this process so shutdown_tracing flushes them all.
_current: TracerProvider | None = None
_providers: list[TracerProvider] = []
_global_provider_set = False


def _in_unsampled_trace() -> bool:
    # Under the parent-based sampler a child of an unsampled span is never
    # recorded, so its span, and the attributes made before it, can be skipped.
    parent = trace.get_current_span().get_span_context()
    return parent.is_valid and not parent.trace_flags.sampled


class _SampledQueriesInstrumentor(AsyncPGInstrumentor):
    """asyncpg's instrumentation, doing nothing for a query in an unsampled trace.

    The library builds each statement's span attributes (the statement parsed
    for its name, the connection's address) before the sampler decides, on every
    query; a query inside an RPC that is not sampled skips all of it.
    """

    async def _do_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if _in_unsampled_trace():
            return await func(*args, **kwargs)
        return await super()._do_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]

    async def _do_cursor_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if _in_unsampled_trace():
            return await func(*args, **kwargs)
        return await super()._do_cursor_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]

    async def _do_prepared_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if _in_unsampled_trace():
            return await func(*args, **kwargs)
        return await super()._do_prepared_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]


_asyncpg = _SampledQueriesInstrumentor()  # type: ignore[no-untyped-call]


def configure_tracing(
    service: str,
    otlp_endpoint: str = "",
    *,
    exporter: SpanExporter | None = None,
    sample_ratio: float = 1.0,
) -> TracerProvider:
    """Create the tracer provider for ``mamoru-<service>`` and instrument asyncpg.

    ``otlp_endpoint`` is an OTLP/gRPC collector address; an ``http://`` scheme
    means plaintext, anything else TLS (or ``OTEL_EXPORTER_OTLP_INSECURE``). With
    no endpoint nothing is exported. ``exporter`` receives every span as it ends
    (tests pass an ``InMemorySpanExporter``).

    ``sample_ratio`` is the share of new traces recorded. The decision is the
    caller's when it sent trace context (parent-based), so a trace is either
    whole across services or absent; a call not sampled still has a trace id for
    its log lines, but no span is recorded, given attributes or exported.
    """
    global _current, _global_provider_set
    if not 0.0 <= sample_ratio <= 1.0:
        raise ValueError(f"sample_ratio must be between 0 and 1, got {sample_ratio}")
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: f"mamoru-{service}"}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))

    # The global provider can be set once per process (later calls only log a
    # warning), so the interceptors below take the provider explicitly instead of
    # relying on the global; the global serves spans started by hand.
    if not _global_provider_set:
        trace.set_tracer_provider(provider)
        _global_provider_set = True
    # asyncpg is patched process-wide, so it reports to the first provider until
    # shutdown_tracing. Query parameters stay out of spans (capture_parameters
    # defaults to False): they hold personal data and secrets.
    if not _asyncpg.is_instrumented_by_opentelemetry:
        _asyncpg.instrument(tracer_provider=provider)

    _providers.append(provider)
    _current = provider
    return provider


class _SampledAttributesInterceptor(OpenTelemetryAioServerInterceptor):
    """OpenTelemetry's aio server interceptor, describing only the spans it records.

    The library builds the span's attributes (method, service, peer address,
    user agent from a copy of the metadata) before the sampler has decided; an
    unsampled RPC then pays for attributes nobody keeps. Here the span starts
    bare and the same attributes are set only when it records.
    """

    @contextlib.contextmanager
    def _start_span(
        self,
        handler_call_details: grpc.HandlerCallDetails,
        context: Any,
        set_status_on_exception: bool = False,
    ) -> Iterator[trace.Span]:
        with self._tracer.start_as_current_span(
            name=handler_call_details.method,
            kind=trace.SpanKind.SERVER,
            set_status_on_exception=set_status_on_exception,
            # The interceptor records what escapes the handler itself (see below);
            # recording it here too would format every traceback twice.
            record_exception=False,
        ) as span:
            if span.is_recording():
                span.set_attributes(_server_span_attributes(handler_call_details, context))
            yield cast(trace.Span, _AnswerAwareSpan(span))


class _AnswerAwareSpan(ObjectProxy[trace.Span]):
    """The server span, to which a refusal is an answer, not an exception.

    A unary call's refusal is set as its status without raising (``errors.py``),
    and the library's context wrapper gives the span that status. A streaming
    call's refusal is answered with ``abort_with_status``, which grpc.aio raises
    as ``AbortError``; the library would record it as an exception with its
    formatted traceback, which is most of what a refused call costs. The span
    keeps the status code and message instead; any other exception is recorded
    as before.
    """

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        answered = exception.__context__ if isinstance(exception, grpc.aio.AbortError) else None
        if isinstance(answered, DomainError):
            self.__wrapped__.set_attribute(RPC_GRPC_STATUS_CODE, answered.code.value[0])
            self.__wrapped__.set_status(
                _server_status(answered.code, answered.message)  # type: ignore[no-untyped-call]
            )
            return
        self.__wrapped__.record_exception(exception, *args, **kwargs)


def _server_span_attributes(details: grpc.HandlerCallDetails, context: Any) -> dict[str, Any]:
    # The attributes opentelemetry-instrumentation-grpc gives a server span.
    attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.grpc.status_code": 0}
    if details.method:
        service, _, method = details.method.lstrip("/").partition("/")
        attributes["rpc.method"] = method
        attributes["rpc.service"] = service
    for key, value in context.invocation_metadata() or ():
        if key == "user-agent":
            attributes["rpc.user_agent"] = value
    peer: str = context.peer()
    if not peer.startswith("unix:"):
        with contextlib.suppress(ValueError, IndexError):
            ip, port = peer.split(",")[0].split(":", 1)[1].rsplit(":", 1)
            ip = unquote(ip)
            attributes["net.peer.ip"] = ip
            attributes["net.peer.port"] = port
            if ip in ("[::1]", "127.0.0.1"):
                attributes["net.peer.name"] = "localhost"
    return attributes


_HEALTH_SERVICE = "grpc.health.v1.Health"


def _not_health_check(details: Any) -> bool:
    """The tracing filter: every call but the health service's.

    The same test as the library's ``negate(health_check())``, on the method name
    alone: the library's filter first asks whether the details are one of several
    call-detail types, runtime protocol checks that cost more than a span on every
    call, server and client.
    """
    method = getattr(details, "method", "")
    # grpc.aio hands a client's method name over as bytes (grpc/grpc#31092).
    if isinstance(method, bytes):
        method = method.decode()
    return not method.lstrip("/").startswith(_HEALTH_SERVICE)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """Interceptors that open a server span per RPC, continuing the caller's trace.

    Health checks are not traced: probes every few seconds would bury real traffic.
    """
    tracer = trace.get_tracer(
        "opentelemetry.instrumentation.grpc",
        _grpc_instrumentation_version,
        _current,
        schema_url="https://opentelemetry.io/schemas/1.11.0",
    )
    interceptor: grpc.aio.ServerInterceptor = _SampledAttributesInterceptor(  # type: ignore[no-untyped-call]
        tracer, filter_=_not_health_check
    )
    return [interceptor]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that open a client span per call and send its trace context.

    One per call kind, because a grpc.aio channel files each interceptor object
    under the first kind it implements and ignores it for the others.
    """
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(  # type: ignore[no-untyped-call]
        tracer_provider=_current, filter_=_not_health_check
    )
    return interceptors


def shutdown_tracing() -> None:
    """Export what is still buffered and stop every provider made by configure_tracing."""
    global _current
    for provider in _providers:
        provider.force_flush()
        provider.shutdown()
    _providers.clear()
    _current = None
    if _asyncpg.is_instrumented_by_opentelemetry:
        # Unpatched, so the next configure_tracing reports to its own provider.
        _asyncpg.uninstrument()
