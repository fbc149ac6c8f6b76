"""Domain errors and the one place that turns them into gRPC status.

Handlers and domain code raise these; ``ErrorMappingInterceptor`` converts them
into a status with ``google.rpc`` details: ``BadRequest`` field violations for
INVALID_ARGUMENT, ``ErrorInfo`` with a machine-readable reason otherwise. Any
other exception becomes INTERNAL with a generic message (details go to the log).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime.handlers import wrap_handler

log = structlog.get_logger("mamoru.errors")

ERROR_DOMAIN = "mamoru"


class DomainError(Exception):
    """A refusal the caller can act on. ``reason`` is a stable UPPER_SNAKE code."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(
        self, reason: str, message: str = "", *, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message or reason.replace("_", " ").lower()
        self.metadata = dict(metadata or {})


class FailedPrecondition(DomainError):
    """A business rule refused the request (limit exceeded, wallet frozen...)."""


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED


class InvalidArgument(DomainError):
    """One or more request fields are wrong; each violation names its field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[tuple[str, str]]) -> None:
        self.violations = list(violations)
        summary = "; ".join(f"{field}: {why}" for field, why in self.violations)
        super().__init__("INVALID_ARGUMENT", summary)


def invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument([(field, description)])


def to_status(error: DomainError) -> status_pb2.Status:
    detail = any_pb2.Any()
    if isinstance(error, InvalidArgument):
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in error.violations
                ]
            )
        )
    else:
        detail.Pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
            )
        )
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=[detail])


def _internal_status() -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> None:
    if isinstance(error, DomainError):
        status = to_status(error)
    elif isinstance(error, NotImplementedError):
        # The generated servicer base class raises it for RPCs a service lacks.
        status = status_pb2.Status(code=code_pb2.UNIMPLEMENTED, message="not implemented")
    else:
        log.error("rpc.unhandled_exception", exc_info=error)
        status = _internal_status()
    await context.abort_with_status(rpc_status.to_status(status))


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns exceptions escaping a handler into a gRPC status with details."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return wrap_handler(handler, unary=_map_unary, streaming=_map_streaming)


def _map_unary(
    behaviour: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(context, error)
            raise  # unreachable: abort raises

    return run


def _map_streaming(
    behaviour: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async for item in behaviour(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(context, error)

    return run
