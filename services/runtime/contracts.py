"""Every request is checked against the rules its proto declares, before any handler.

The format rules of a request (required fields, lengths, UUIDs, ranges, known enum
values) live in ``protos/`` as ``buf.validate`` annotations, where client developers
read them. ``RequestValidationInterceptor`` evaluates them with protovalidate on every
request message (each message of a client stream too) and refuses a violating request
with ``InvalidArgument``: the same ``BadRequest`` field violations, dotted snake_case
field paths and descriptions that hand-written checks produce, so a client sees one
error shape whichever side found the problem.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import protovalidate

from services.runtime.errors import InvalidArgument
from services.runtime.handlers import (
    StreamingBehaviour,
    UnaryBehaviour,
    responses_of,
    wrap_handler,
)

# One validator for the process: it compiles each message type's rules once and caches them.
_VALIDATOR = protovalidate.Validator()

# protovalidate's rule ids, in the words the hand-written checks have always used.
_DESCRIPTIONS: dict[str, Callable[[Any], str]] = {
    "required": lambda _: "is required",
    "string.uuid": lambda _: "must be a UUID",
    "string.uuid_empty": lambda _: "is required",
    "string.email": lambda _: "must be an email address",
    "string.email_empty": lambda _: "is required",
    "string.ip": lambda _: "must be an IPv4 or IPv6 address",
    "string.ip_empty": lambda _: "is required",
    "string.max_len": lambda limit: f"must be at most {limit} characters",
    "string.min_len": lambda limit: (
        "is required" if limit == 1 else f"must be at least {limit} characters"
    ),
    "enum.defined_only": lambda _: "is not a known value",
    # Only ever used to refuse the zero value, which means "not set".
    "enum.not_in": lambda _: "is required",
}


# Rules that are about one field but must be set elsewhere (on the message holding
# it, or on a message-typed field around it) name that field by their id, so the
# violation names it as the handlers always have. A path starting with "." is
# relative to the field the rule is set on.
_RULE_FIELD = {
    "money.positive": ".amount_minor",
    "notice.movement_id": "money.movement_id",
}


def _field_path(violation: protovalidate.Violation) -> str:
    named = _RULE_FIELD.get(violation.proto.rule_id, "")
    if named and not named.startswith("."):
        return named
    path = ""
    where = violation.proto.field
    for element in where.elements if where is not None else ():
        path = f"{path}.{element.field_name}" if path else element.field_name
        if element.subscript is not None:
            path += f"[{element.subscript.value}]"
    return f"{path}{named}"


def _description(violation: protovalidate.Violation) -> str:
    rule_id = violation.proto.rule_id
    describe = _DESCRIPTIONS.get(rule_id)
    if describe is not None:
        return describe(violation.rule_value)
    return violation.proto.message or rule_id


def violations_of(request: Any) -> list[tuple[str, str]]:
    """The (field, description) pairs by which ``request`` breaks its proto's rules."""
    return [(_field_path(v), _description(v)) for v in _VALIDATOR.collect_violations(request)]


def check(request: Any) -> None:
    """Raise ``InvalidArgument`` if ``request`` breaks a rule of its proto."""
    found = violations_of(request)
    if found:
        raise InvalidArgument(found)


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        check(request)
        yield request


def _guard_unary(behaviour: UnaryBehaviour, client_streams: bool) -> UnaryBehaviour:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if client_streams:
            return await behaviour(_checked(request), context)
        check(request)
        return await behaviour(request, context)

    return unary


def _guard_streaming(behaviour: StreamingBehaviour, client_streams: bool) -> StreamingBehaviour:
    async def streaming(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        if client_streams:
            request = _checked(request)
        else:
            check(request)
        async for response in responses_of(behaviour(request, context)):
            yield response

    return streaming


def guard_contract(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` refusing any request message its proto's rules do not admit."""
    client_streams = bool(handler.request_streaming)
    return wrap_handler(
        handler,
        unary=lambda behaviour: _guard_unary(behaviour, client_streams),
        streaming=lambda behaviour: _guard_streaming(behaviour, client_streams),
    )


class RequestValidationInterceptor(grpc.aio.ServerInterceptor):
    """Refuses requests that break their proto's ``buf.validate`` rules; see the module docstring.

    Place it inside the error-mapping interceptor, which turns the ``InvalidArgument``
    into the status, and inside the access one, so a caller who may not call an RPC
    learns nothing about its rules.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return guard_contract(handler)
