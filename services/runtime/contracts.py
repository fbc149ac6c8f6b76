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

from collections.abc import Callable
from typing import Any

import grpc
import protovalidate

from services.runtime.errors import InvalidArgument
from services.runtime.handlers import Context, HandlerInterceptor, wrap_handler

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


async def _check_request(request: Any, _: Context) -> None:
    check(request)


def guard_contract(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` refusing any request message its proto's rules do not admit."""
    return wrap_handler(handler, check_request=_check_request)


class RequestValidationInterceptor(HandlerInterceptor):
    """Refuses requests that break their proto's ``buf.validate`` rules; see the module docstring.

    Place it inside the error-mapping interceptor, which turns the ``InvalidArgument``
    into the status, and inside the access one, so a caller who may not call an RPC
    learns nothing about its rules.
    """

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        return guard_contract(handler)
