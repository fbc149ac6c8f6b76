"""Per-RPC context: a request id that follows a call across services, one line per RPC.

Server side, ``RpcLogInterceptor`` binds ``rpc_method`` and ``request_id`` as
structlog context variables for the duration of each RPC, so every line the
handler writes carries them, and writes the canonical summary line
(``event="rpc"``) with the final status code, duration and caller.

Client side, ``request_id_client_interceptors()`` sends the current request
id as ``x-request-id`` metadata, so the services a request passes through all log
the same id.

Server interceptor order: ``[*server_interceptors(), RpcLogInterceptor()]``, the
tracing interceptor outside, so the summary line is written inside the RPC's span
and carries its trace id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import Token
from typing import Any

import grpc
import structlog
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from services.runtime.handlers import (
    Context,
    HandlerInterceptor,
    final_status,
    observed,
    wrap_handler,
)
from services.runtime.logging import get_logger

REQUEST_ID_METADATA_KEY = "x-request-id"

# Letters, digits and a few separators, at most 64 characters: enough for a UUID,
# ULID or a proxy's trace token, and nothing that could forge or break a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNAVAILABLE,
    }
)

# Kubernetes probes call these every few seconds; a healthy answer is logged at
# debug so it does not bury real traffic (a failing one is still logged normally).
QUIET_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)

# OpenTelemetry's semantic-convention attribute for the numeric gRPC status.
_STATUS_CODE_ATTRIBUTE = "rpc.grpc.status_code"

_log = get_logger("mamoru.rpc")


def current_request_id() -> str | None:
    """The request id of the RPC being served in this task, if any."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return value if isinstance(value, str) else None


def request_id_from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The caller's ``x-request-id`` when it is a sane short token, else a new UUID."""
    for key, value in metadata or ():
        if key == REQUEST_ID_METADATA_KEY:
            if isinstance(value, str) and _SANE_REQUEST_ID.fullmatch(value):
                return value
            break
    return str(uuid.uuid4())


class RpcLogInterceptor(HandlerInterceptor):
    """Binds the RPC's log context and writes one summary line per RPC.

    grpc.aio runs ``intercept_service`` before the call exists, so the handler's
    behaviour is wrapped instead: only there are the servicer context (status,
    peer) and the outcome visible.
    """

    def __init__(self, *, quiet_method_prefixes: tuple[str, ...] = QUIET_METHOD_PREFIXES) -> None:
        super().__init__()
        self._quiet_method_prefixes = quiet_method_prefixes

    def unknown_method(self, details: grpc.HandlerCallDetails) -> None:
        # grpc answers UNIMPLEMENTED without running anything; a call to an
        # unknown method is worth a line (probing, a client built on a newer
        # contract), and there is no call context to wrap.
        request_id = request_id_from_metadata(details.invocation_metadata)
        with structlog.contextvars.bound_contextvars(
            rpc_method=details.method, request_id=request_id
        ):
            _log.info("rpc", code=grpc.StatusCode.UNIMPLEMENTED.name, duration_ms=0.0)

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        quiet = method.startswith(self._quiet_method_prefixes)
        return wrap_handler(handler, observed(functools.partial(_summarised, method, quiet)))


def _summarised(
    method: str, quiet: bool, context: Context
) -> Callable[[BaseException | None], None]:
    tokens = _bind_rpc_context(method, context)
    started = time.perf_counter()
    # Read while the call lives: a stream's generator may be finalised after its
    # call is gone (a server stopping), when asking the call segfaults.
    peer = context.peer()

    def end(error: BaseException | None) -> None:
        _finish(context, peer, started, quiet, error)
        _unbind(tokens)

    return end


def _bind_rpc_context(method: str, context: Any) -> Mapping[str, Token[Any]]:
    request_id = request_id_from_metadata(context.invocation_metadata())
    return structlog.contextvars.bind_contextvars(rpc_method=method, request_id=request_id)


def _unbind(tokens: Mapping[str, Token[Any]]) -> None:
    # A streaming handler's generator can be finalised from another context after
    # its RPC task ended; nothing of this RPC is bound there, so there is nothing to undo.
    with contextlib.suppress(ValueError):
        structlog.contextvars.reset_contextvars(**tokens)


def _finish(
    context: Any, peer: str, started: float, quiet: bool, error: BaseException | None
) -> None:
    code = final_status(context, error)
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    unexpected = error is not None and not isinstance(
        error, grpc.aio.AbortError | asyncio.CancelledError | GeneratorExit
    )
    if unexpected:
        # OpenTelemetry's aio server interceptor records the exception but leaves
        # the span's status unset and its status code attribute at OK; this is
        # the only place that knows the status grpc will send.
        span = trace.get_current_span()
        span.set_attribute(_STATUS_CODE_ATTRIBUTE, code.value[0])
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    fields: dict[str, Any] = {
        "code": code.name,
        "duration_ms": duration_ms,
        "peer": peer,
    }
    if unexpected:
        fields["exc_info"] = error
    if code in SERVER_ERROR_CODES:
        _log.warning("rpc", **fields)
    elif quiet and code is grpc.StatusCode.OK:
        _log.debug("rpc", **fields)
    else:
        _log.info("rpc", **fields)


class _RequestIdForwarding:
    @staticmethod
    def with_request_id(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        """``details`` with the current request id added, unless the caller set one."""
        request_id = current_request_id()
        if request_id is None:
            return details
        metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
        if REQUEST_ID_METADATA_KEY in metadata:
            return details
        metadata.add(REQUEST_ID_METADATA_KEY, request_id)
        return details._replace(metadata=metadata)

    async def forward(
        self, continuation: Callable[..., Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self.with_request_id(client_call_details), request)


# grpc.aio files each interceptor object under the first call kind it implements, so
# one object cannot serve every kind: a channel is given one per kind.


class RequestIdClientInterceptor(_RequestIdForwarding, grpc.aio.UnaryUnaryClientInterceptor):
    """Sends the current request id as ``x-request-id`` on unary-unary calls."""

    intercept_unary_unary = _RequestIdForwarding.forward


class RequestIdUnaryStreamClientInterceptor(
    _RequestIdForwarding, grpc.aio.UnaryStreamClientInterceptor
):
    intercept_unary_stream = _RequestIdForwarding.forward


class RequestIdStreamUnaryClientInterceptor(
    _RequestIdForwarding, grpc.aio.StreamUnaryClientInterceptor
):
    intercept_stream_unary = _RequestIdForwarding.forward


class RequestIdStreamStreamClientInterceptor(
    _RequestIdForwarding, grpc.aio.StreamStreamClientInterceptor
):
    intercept_stream_stream = _RequestIdForwarding.forward


def request_id_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """One request-id interceptor per call kind, to pass to a channel."""
    return [
        RequestIdClientInterceptor(),
        RequestIdUnaryStreamClientInterceptor(),
        RequestIdStreamUnaryClientInterceptor(),
        RequestIdStreamStreamClientInterceptor(),
    ]
