"""Money as the other services' protos carry it."""

from __future__ import annotations

from mamoru.common.v1 import common_pb2


def jpy(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="JPY")
