"""Requests whose bytes do not decode get INVALID_ARGUMENT, on every RPC.

grpc decodes a request with the handler's ``request_deserializer`` before any
interceptor's behaviour runs, and answers a decode failure itself: UNKNOWN, with
the parser's exception text. ``RequestDecodingInterceptor`` swaps each handler's
deserializer for one that never raises (an undecodable message becomes a marker)
and refuses the marker before anything else looks at the request, with a generic
message and the reason ``MALFORMED_REQUEST``. Request streams are checked message
by message, so a bad message later in a stream is refused the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime.errors import ERROR_DOMAIN
from services.runtime.handlers import Context, HandlerInterceptor, wrap_handler


class _Undecodable:
    """Stands for a request message whose bytes did not decode."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<undecodable request>"


UNDECODABLE = _Undecodable()


MALFORMED_REQUEST = "MALFORMED_REQUEST"


def _malformed_status() -> grpc.Status:
    # No field to name: the message as a whole is not one. The reason says so.
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=MALFORMED_REQUEST, domain=ERROR_DOMAIN))
    return rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT,
            message="the request could not be decoded",
            details=[detail],
        )
    )


_MALFORMED = _malformed_status()


async def _refuse(context: Context) -> NoReturn:
    await context.abort_with_status(_MALFORMED)
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def decode(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception:
            # DecodeError for bad wire data, UnicodeDecodeError or ValueError from
            # some runtimes for a string field that is not UTF-8: all the same to a caller.
            return UNDECODABLE

    return decode


async def _refuse_undecodable(request: Any, context: Context) -> None:
    if request is UNDECODABLE:
        await _refuse(context)


def guard_decoding(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with a deserializer that cannot fail and a check of its result."""
    return wrap_handler(
        handler,
        check_request=_refuse_undecodable,
        request_deserializer=_lenient(handler.request_deserializer),
    )


class RequestDecodingInterceptor(HandlerInterceptor):
    """Refuses undecodable requests with INVALID_ARGUMENT; see the module docstring.

    Place it inside the logging interceptor (so the refusal is summarised like any
    RPC) and outside the access and error-mapping ones (nothing else should see a
    request that is not one).
    """

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        return guard_decoding(handler)
