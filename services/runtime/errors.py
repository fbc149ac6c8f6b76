"""Domain errors and the one place that turns them into gRPC status.

Handlers and domain code raise these; ``ErrorMappingInterceptor`` converts them
into a status with ``google.rpc`` details: ``BadRequest`` field violations for
INVALID_ARGUMENT, ``ErrorInfo`` with a machine-readable reason otherwise.

Any other exception is either transient or a bug. Transient means the database
or a peer service could not be reached or dropped the connection (PostgreSQL
restarting, a pool closing, a peer answering UNAVAILABLE): the caller gets
UNAVAILABLE and is told to retry with the same idempotency key, which every
mutating RPC deduplicates. A transaction PostgreSQL rolled back to break a
deadlock or a serialization conflict gets ABORTED with the same advice.
Everything else becomes INTERNAL with a generic message (details go to the log).
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

import asyncpg
import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime.handlers import HandlerInterceptor, wrap_handler

log = structlog.get_logger("mamoru.errors")

ERROR_DOMAIN = "mamoru"


M = TypeVar("M")
C = TypeVar("C")


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


def each_item(field: str, items: Iterable[M], convert: Callable[[M], C]) -> list[C]:
    """``convert`` each item of the repeated ``field`` of a batch request; a field it
    refuses is named in full (``assessments[3].client.ip_address``)."""
    converted = []
    for index, item in enumerate(items):
        try:
            converted.append(convert(item))
        except InvalidArgument as error:
            raise InvalidArgument(
                (f"{field}[{index}].{name}", why) for name, why in error.violations
            ) from None
    return converted


def to_status(error: DomainError) -> status_pb2.Status:
    if isinstance(error, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in error.violations
                ]
            )
        )
        return status_pb2.Status(code=error.code.value[0], message=error.message, details=[detail])
    return _refusal_status(error.code, error.reason, error.message, error.metadata)


def _refusal_status(
    code: grpc.StatusCode, reason: str, message: str, metadata: Mapping[str, str]
) -> status_pb2.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))
    return status_pb2.Status(code=code.value[0], message=message, details=[detail])


def _internal_status() -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")


RETRY_ADVICE = "retry with the same idempotency key"

# PostgreSQL errors that say the server or the connection went away, not that
# the statement was wrong: class 08 (connection exception), the 57P shutdown and
# start-up codes (a restart, pg_terminate_backend, a server not yet accepting)
# and class 53 (too many connections, out of memory or disk).
_POSTGRES_AWAY: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.IdleSessionTimeoutError,
    asyncpg.InsufficientResourcesError,
)
# asyncpg reports a connection or pool that is already gone as a plain
# InterfaceError; the same class also covers misuse (a bug), so the message decides.
_CLOSED_INTERFACE_MESSAGES = (
    "connection is closed",
    "connection was closed",
    "pool is closing",
    "pool is closed",
)
_PEER_AWAY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def transient_kind(error: BaseException) -> str | None:
    """``"STORAGE_UNAVAILABLE"``, ``"PEER_UNAVAILABLE"``, ``"TRANSACTION_CONFLICT"`` or ``None``.

    An exception chained from a transient one (``raise ... from error``) is
    transient too; a group is transient only when every member is, so a bug
    next to an outage still reads as a bug.
    """
    if isinstance(error, BaseExceptionGroup):
        first: str | None = None
        for member in error.exceptions:
            kind = transient_kind(member)
            if kind is None:
                return None
            first = first or kind
        return first
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kind = _own_transient_kind(current)
        if kind is not None:
            return kind
        current = current.__cause__
    return None


def _own_transient_kind(error: BaseException) -> str | None:
    if isinstance(error, _POSTGRES_AWAY):
        return "STORAGE_UNAVAILABLE"
    if isinstance(error, asyncpg.InterfaceError) and any(
        message in str(error) for message in _CLOSED_INTERFACE_MESSAGES
    ):
        return "STORAGE_UNAVAILABLE"
    if isinstance(error, asyncpg.TransactionRollbackError):
        return "TRANSACTION_CONFLICT"
    if isinstance(error, grpc.aio.AioRpcError) and error.code() in _PEER_AWAY_CODES:
        return "PEER_UNAVAILABLE"
    if isinstance(error, _AWAY_OS_ERRORS):
        # Refused, reset, unreachable, a unix socket that vanished with its
        # server, a connect or a command that timed out: the network or a server is
        # away. Any other OSError (permissions, a missing file) is a bug.
        return "STORAGE_UNAVAILABLE"
    return None


# What the network or a stopped server raises. TimeoutError is also what asyncpg
# raises when a command outlives its timeout, which may be a stuck lock: such a
# call still gets the retry advice, but is logged as an error (see _abort).
_AWAY_OS_ERRORS = (ConnectionError, TimeoutError, FileNotFoundError, socket.gaierror)


def _deserves_attention(error: BaseException) -> bool:
    """A transient failure that may also be our bug: a deadlock (lock order) or a
    timeout (a stuck lock, a slow query). Logged with its traceback at error level."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, asyncpg.DeadlockDetectedError | TimeoutError):
            return True
        current = current.__cause__
    return False


def transient_status(kind: str) -> status_pb2.Status:
    """UNAVAILABLE (ABORTED for a rolled-back transaction) with the retry advice."""
    if kind == "TRANSACTION_CONFLICT":
        error: DomainError = Aborted(kind, f"the transaction was interrupted; {RETRY_ADVICE}")
    else:
        error = Unavailable(kind, f"temporarily unavailable; {RETRY_ADVICE}")
    return to_status(error)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> None:
    if isinstance(error, DomainError):
        status = to_status(error)
    elif isinstance(error, NotImplementedError):
        # The generated servicer base class raises it for RPCs a service lacks.
        status = status_pb2.Status(code=code_pb2.UNIMPLEMENTED, message="not implemented")
    elif (kind := transient_kind(error)) is not None:
        if _deserves_attention(error):
            log.error("rpc.transient_failure", kind=kind, exc_info=error)
        else:
            # An outage fails many calls at once: one line each, without a traceback.
            log.warning("rpc.transient_failure", kind=kind, error_type=type(error).__name__)
        status = transient_status(kind)
    else:
        log.error("rpc.unhandled_exception", exc_info=error)
        status = _internal_status()
    await context.abort_with_status(rpc_status.to_status(status))


class ErrorMappingInterceptor(HandlerInterceptor):
    """Turns exceptions escaping a handler into a gRPC status with details."""

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        return wrap_handler(handler, _mapped if handler.response_streaming else _answered)


@contextlib.asynccontextmanager
async def _answered(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """A unary call's refusal (a ``DomainError``) set as its status, not raised.

    The client receives exactly what an abort sends (code, message, details), but
    no exception travels out through the other layers: in a credential-stuffing
    flood most calls are refusals, and raising each one through every layer cost
    more than deciding it. grpc discards the response of a call whose status is
    not OK, so the handler's missing answer is never sent.
    """
    try:
        yield
    except grpc.aio.AbortError:
        raise
    except DomainError as error:
        status = _answer(error)
        context.set_code(status.code)
        context.set_details(status.details)
        context.set_trailing_metadata(status.trailing_metadata)
    except Exception as error:
        await _abort(context, error)
        raise  # unreachable: abort raises


def _answer(error: DomainError) -> grpc.Status:
    """The status a refusal is answered with (code, message and details, encoded)."""
    if isinstance(error, InvalidArgument):
        return rpc_status.to_status(to_status(error))
    return _encoded_answer(error.code, error.reason, error.message, tuple(error.metadata.items()))


# A flood's refusals are the same few answers over and over (a wrong password's
# INVALID_CREDENTIALS above all); each is built and encoded once, not per call. An
# answer is a tuple of immutable values, so every call can be handed the same one.
@functools.lru_cache(maxsize=256)
def _encoded_answer(
    code: grpc.StatusCode, reason: str, message: str, metadata: tuple[tuple[str, str], ...]
) -> grpc.Status:
    return rpc_status.to_status(_refusal_status(code, reason, message, dict(metadata)))


@contextlib.asynccontextmanager
async def _mapped(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    try:
        yield
    except grpc.aio.AbortError:
        raise
    except Exception as error:
        await _abort(context, error)
        raise  # unreachable: abort raises
