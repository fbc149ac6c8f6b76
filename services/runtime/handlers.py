"""The one way a server interceptor wraps a gRPC method handler.

A grpc.aio server interceptor only sees the method name, not the call context,
so interceptors that need the context (peer identity, status code, the request)
wrap the handler's behaviour instead. ``wrap_handler`` does that once for the four
kinds of method: an interceptor says what happens around each call (``around``),
and may check each request message (``check_request``) or decode requests its own
way (``request_deserializer``); the relaying of responses, unary or streamed,
lives only here.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
Behaviour: TypeAlias = Callable[[Any, Context], Any]
# Entered when the call starts and left with its outcome: the exception (if any)
# passes through the manager, which may record it, turn it into a status, or let it go.
Around: TypeAlias = Callable[[Context], contextlib.AbstractAsyncContextManager[object]]
CheckRequest: TypeAlias = Callable[[Any, Context], Awaitable[None]]
Deserializer: TypeAlias = Callable[[bytes], Any]
# What the behaviour is handed in place of the request (or request stream) grpc passes in.
Requests: TypeAlias = Callable[[Any, Context], Awaitable[Any]]

# The server counts a call's deadline from when the request arrived, so the client's
# own deadline ends a moment earlier and its cancellation can beat the server's timer.
# A call cancelled that close to its deadline was the client giving up on it.
DEADLINE_SLACK_SECONDS = 0.25


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that serves each known method with the handler ``wrap`` makes
    of it (usually with ``wrap_handler``); ``unknown_method`` hears of the others.

    grpc.aio asks every interceptor for the handler on every call. The wrapped
    handler depends only on the method and the handler beneath, which is the same
    object call after call, so it is made once per method and kept: each call then
    costs a lookup instead of a new set of closures in every layer, and the layer
    outside finds the same object beneath it too.
    """

    def __init__(self) -> None:
        # method -> (the handler beneath, the wrapped handler); only methods a
        # servicer answers, so the callers cannot grow it.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            self.unknown_method(handler_call_details)
            return None
        method: str = handler_call_details.method
        kept = self._wrapped.get(method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self.wrap(handler, handler_call_details)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    @abc.abstractmethod
    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        """The handler to serve the call described by ``details`` with; it may depend
        on the method and the handler only, as it is kept for later calls."""

    def unknown_method(self, details: grpc.HandlerCallDetails) -> None:
        """Called for a method no servicer has; grpc answers UNIMPLEMENTED itself."""


def _untouched(_: Context) -> contextlib.AbstractAsyncContextManager[object]:
    return contextlib.nullcontext()


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    around: Around = _untouched,
    *,
    check_request: CheckRequest | None = None,
    request_deserializer: Deserializer | None = None,
) -> grpc.RpcMethodHandler:
    """``handler`` with each call run inside ``around(context)``.

    ``check_request`` sees every request message before the behaviour does (each
    message of a request stream as it arrives) and may end the call by aborting.
    ``request_deserializer`` replaces the handler's own; the response serializer
    is always kept.
    """
    if handler.request_streaming and handler.response_streaming:
        behaviour, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        behaviour, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        behaviour, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        behaviour, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    if behaviour is None:
        return handler
    requests = _checked(check_request, handler.request_streaming)
    wrapped = (
        _streaming(behaviour, around, requests)
        if handler.response_streaming
        else _unary(behaviour, around, requests)
    )
    return factory(
        wrapped,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _unary(behaviour: Behaviour, around: Around, requests: Requests) -> Behaviour:
    async def run(request: Any, context: Context) -> Any:
        async with around(context):
            return await behaviour(await requests(request, context), context)

    return run


def _streaming(behaviour: Behaviour, around: Around, requests: Requests) -> Behaviour:
    async def run(request: Any, context: Context) -> AsyncIterator[Any]:
        async with around(context):
            responses = behaviour(await requests(request, context), context)
            async for response in _responses_of(responses):
                yield response

    return run


def _checked(check: CheckRequest | None, request_streaming: bool) -> Requests:

    async def as_is(request: Any, _: Context) -> Any:
        return request

    async def checked(request: Any, context: Context) -> Any:
        assert check is not None
        await check(request, context)
        return request

    async def each_checked(requests: AsyncIterator[Any], context: Context) -> Any:
        assert check is not None

        async def each() -> AsyncIterator[Any]:
            async for request in requests:
                await check(request, context)
                yield request

        return each()

    if check is None:
        return as_is
    return each_checked if request_streaming else checked


def observed(begin: Callable[[Context], Callable[[BaseException | None], None]]) -> Around:
    """An ``around`` for watching calls without changing them.

    ``begin(context)`` runs as the call starts and returns what to run as it ends,
    with the exception that ended it (a stream closed from outside: GeneratorExit)
    or None; the exception then goes on unchanged.
    """

    @contextlib.asynccontextmanager
    async def around(context: Context) -> AsyncIterator[None]:
        end = begin(context)
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            end(error)

    return around


async def _responses_of(result: Any) -> AsyncIterator[Any]:
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


def final_status(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status grpc sends for a call that ended with ``error`` (None: it returned).

    The code the handler set or aborted with, else OK or UNKNOWN; a call cancelled
    from outside is CANCELLED, or DEADLINE_EXCEEDED when its time ran out.
    """
    if isinstance(error, GeneratorExit):
        # The stream was closed from outside (its call may already be gone).
        return grpc.StatusCode.CANCELLED
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= DEADLINE_SLACK_SECONDS:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if error is None:
        return grpc.StatusCode.OK if code is None else code
    # grpc keeps a failure code set before the exception, but turns OK into UNKNOWN.
    if code is None or code is grpc.StatusCode.OK:
        return grpc.StatusCode.UNKNOWN
    return code
