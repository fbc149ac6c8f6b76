"""The wallet, called as principal ``gateway`` with the merchant's ``x-merchant-key``.

The wallet's refusals come back as ``Refusal``s carrying its reason code and the
field it named, so partners see the same codes a register would.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.gateway.domain.errors import Refusal
from services.gateway.domain.payments import Sale, WalletPayment, WalletTopUp

MERCHANT_KEY_HEADER = "x-merchant-key"
# Wallet field names differ from the API's where the API speaks of its own resources.
_FIELDS = {"payment_movement_id": "payment_id", "source": "code"}
_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.FAILED_PRECONDITION: 422,
    grpc.StatusCode.OUT_OF_RANGE: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}
BASKET = {
    name.removeprefix("GOODS_CATEGORY_").lower(): value
    for name, value in risk_pb2.GoodsCategory.items()
    if value != risk_pb2.GOODS_CATEGORY_UNSPECIFIED
}


def _refusal(error: grpc.aio.AioRpcError) -> Refusal:
    reason, field = "", ""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad) and bad.field_violations:
            field = bad.field_violations[0].field
    field = _FIELDS.get(field.split(".")[0], field)
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Refusal(
            503,
            "WALLET_UNAVAILABLE",
            "the wallet did not answer; retry with the same key",
            headers={"Retry-After": "1"},
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        # The merchant key the gateway holds was refused: an operator must re-register it.
        return Refusal(503, "MERCHANT_UNAVAILABLE", "this merchant cannot be reached now")
    status_code = _STATUS.get(code)
    if status_code is None:
        return Refusal(502, "WALLET_ERROR", "the wallet failed to answer")
    default_reason = "INVALID_ARGUMENT" if code == grpc.StatusCode.INVALID_ARGUMENT else code.name
    return Refusal(status_code, reason or default_reason, error.details() or "", field=field)


def jpy(amount_minor: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount_minor, currency=currency)


def _time(stamp: Timestamp) -> datetime | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def _payment(payment: wallet_pb2.Payment, currency: str) -> WalletPayment:
    return WalletPayment(
        movement_id=payment.movement_id,
        authorization_id=payment.authorization_id,
        merchant_id=uuid.UUID(payment.merchant_id),
        store_id=uuid.UUID(payment.store_id),
        amount_minor=payment.amount.amount_minor,
        currency=payment.amount.currency or currency,
        refunded_minor=payment.refunded.amount_minor,
        occurred_at=_time(payment.occurred_at),
        hold_expires_at=_time(payment.hold_expires_at),
    )


class WalletClient:
    """The ``Wallet`` port over gRPC: domain values in, domain values out."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = wallet_pb2_grpc.WalletServiceStub(channel)
        self._timeout = timeout

    async def _call(self, method: str, request: Any, merchant_key: str) -> Any:
        try:
            return await getattr(self._stub, method)(
                request, metadata=((MERCHANT_KEY_HEADER, merchant_key),), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _refusal(error) from None

    async def authorize(self, merchant_key: str, sale: Sale) -> WalletPayment:
        reply = await self._call(
            "AuthorizePayment",
            wallet_pb2.AuthorizePaymentRequest(
                code=sale.code,
                amount=jpy(sale.amount_minor, sale.currency),
                store_id=str(sale.store_id),
                basket_categories=[BASKET[c] for c in sale.basket],
                idempotency_key=sale.idempotency_key,
            ),
            merchant_key,
        )
        return _payment(reply.payment, sale.currency)

    async def capture(self, merchant_key: str, sale: Sale) -> WalletPayment:
        request = wallet_pb2.CapturePaymentRequest(
            amount=jpy(sale.amount_minor, sale.currency),
            store_id=str(sale.store_id),
            basket_categories=[BASKET[c] for c in sale.basket],
            idempotency_key=sale.idempotency_key,
        )
        if sale.authorization_id:
            request.authorization_id = sale.authorization_id
        else:
            request.code = sale.code
        reply = await self._call("CapturePayment", request, merchant_key)
        return _payment(reply.payment, sale.currency)

    async def void(self, merchant_key: str, authorization_id: str, idempotency_key: str) -> None:
        await self._call(
            "VoidAuthorization",
            wallet_pb2.VoidAuthorizationRequest(
                authorization_id=authorization_id, idempotency_key=idempotency_key
            ),
            merchant_key,
        )

    async def refund(
        self,
        merchant_key: str,
        movement_id: str,
        amount_minor: int,
        currency: str,
        reason: str,
        idempotency_key: str,
    ) -> tuple[str, WalletPayment]:
        reply = await self._call(
            "RefundPayment",
            wallet_pb2.RefundPaymentRequest(
                payment_movement_id=movement_id,
                amount=jpy(amount_minor, currency),
                reason=reason,
                idempotency_key=idempotency_key,
            ),
            merchant_key,
        )
        return str(reply.movement_id), _payment(reply.payment, currency)

    async def accept_cash(
        self,
        merchant_key: str,
        code: str,
        amount_minor: int,
        currency: str,
        store_id: uuid.UUID,
        idempotency_key: str,
    ) -> WalletTopUp:
        reply = await self._call(
            "AcceptCashTopUp",
            wallet_pb2.AcceptCashTopUpRequest(
                code=code,
                amount=jpy(amount_minor, currency),
                store_id=str(store_id),
                idempotency_key=idempotency_key,
            ),
            merchant_key,
        )
        top_up = reply.top_up
        return WalletTopUp(
            movement_id=top_up.movement_id,
            amount_minor=top_up.amount.amount_minor,
            currency=top_up.amount.currency or currency,
            occurred_at=_time(top_up.occurred_at),
        )
