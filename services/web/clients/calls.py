"""Calls to identity and the wallet as principal ``web``; their refusals become ``Refused``.

A refusal carries a reason the pages translate (never the service's own text, which
is English and may say more than a person should see) and the field it named.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

T = TypeVar("T")


class Refused(Exception):
    """A call identity or the wallet refused, as the pages tell it."""

    def __init__(self, reason: str, field: str = "", code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.code = code


def refusal(error: grpc.aio.AioRpcError) -> Refused:
    reason, field = "", ""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad) and bad.field_violations:
            field = bad.field_violations[0].field
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Refused("unavailable", code=code.name)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Refused(reason or "unauthenticated", field, code.name)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Refused("too_many", field, code.name)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return Refused(reason or "invalid", field, code.name)
    return Refused(reason or code.name.lower(), field, code.name)


async def call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except grpc.aio.AioRpcError as error:
        raise refusal(error) from None
