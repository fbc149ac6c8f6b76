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

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime.errors import ERROR_DOMAIN
from services.runtime.handlers import responses_of

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


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


async def _checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
    async for request in requests:
        if request is UNDECODABLE:
            await _refuse(context)
        yield request


def _unary_request(behaviour: Callable[[Any, Context], Any], streaming: bool) -> Any:
    if streaming:

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if request is UNDECODABLE:
                await _refuse(context)
            async for response in responses_of(behaviour(request, context)):
                yield response

        return stream

    async def unary(request: Any, context: Context) -> Any:
        if request is UNDECODABLE:
            await _refuse(context)
        return await behaviour(request, context)

    return unary


def _stream_request(behaviour: Callable[[Any, Context], Any], streaming: bool) -> Any:
    if streaming:

        async def stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for response in responses_of(behaviour(_checked(requests, context), context)):
                yield response

        return stream

    async def unary(requests: AsyncIterator[Any], context: Context) -> Any:
        return await behaviour(_checked(requests, context), context)

    return unary


def guard_decoding(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with a deserializer that cannot fail and a check of its result."""
    codecs = {
        "request_deserializer": _lenient(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _unary_request(handler.unary_unary, streaming=False), **codecs
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _unary_request(handler.unary_stream, streaming=True), **codecs
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _stream_request(handler.stream_unary, streaming=False), **codecs
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            _stream_request(handler.stream_stream, streaming=True), **codecs
        )
    return handler


class RequestDecodingInterceptor(grpc.aio.ServerInterceptor):
    """Refuses undecodable requests with INVALID_ARGUMENT; see the module docstring.

    Place it inside the logging interceptor (so the refusal is summarised like any
    RPC) and outside the access and error-mapping ones (nothing else should see a
    request that is not one).
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return guard_decoding(handler)
