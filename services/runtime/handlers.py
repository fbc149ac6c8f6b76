"""Wrapping gRPC method handlers of every kind.

A grpc.aio server interceptor only sees the method name, not the call context,
so interceptors that need the context (peer identity, status code) wrap the
handler's behaviour instead. This module does that once for the four kinds.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

UnaryBehaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamingBehaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    *,
    unary: Callable[[UnaryBehaviour], UnaryBehaviour],
    streaming: Callable[[StreamingBehaviour], StreamingBehaviour],
) -> grpc.RpcMethodHandler:
    """Return ``handler`` with its behaviour passed through ``unary`` or ``streaming``.

    "Unary" here means the response is a single message (unary-unary and
    stream-unary); "streaming" means the response is a stream.
    """
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **codecs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **codecs)
    return handler


async def responses_of(result: Any) -> AsyncIterator[Any]:
    """The responses of a response-streaming behaviour's ``result``, whatever its style.

    grpc.aio accepts an async generator, any async iterable, or a coroutine that
    sends with ``context.write()`` and returns None (the health service's Watch);
    a wrapper must relay all three.
    """
    if inspect.isasyncgen(result):
        async with contextlib.aclosing(result):
            async for response in result:
                yield response
    elif hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    elif inspect.isawaitable(result):
        await result
