"""What the use cases need from outside, as Protocols (the adapters live in clients/)."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from mamoru.wallet.v1 import wallet_pb2


class Wallet(Protocol):
    async def authorize(
        self, merchant_key: str, request: wallet_pb2.AuthorizePaymentRequest
    ) -> wallet_pb2.Payment: ...

    async def capture(
        self, merchant_key: str, request: wallet_pb2.CapturePaymentRequest
    ) -> wallet_pb2.Payment: ...

    async def void(
        self, merchant_key: str, request: wallet_pb2.VoidAuthorizationRequest
    ) -> None: ...

    async def refund(
        self, merchant_key: str, request: wallet_pb2.RefundPaymentRequest
    ) -> wallet_pb2.RefundPaymentResponse: ...

    async def accept_cash(
        self, merchant_key: str, request: wallet_pb2.AcceptCashTopUpRequest
    ) -> wallet_pb2.TopUp: ...


class KillSwitch(Protocol):
    def suspended(self, partner_id: uuid.UUID) -> bool:
        """True when risk's policy suspends the partner."""
        ...


class WebhookPoster(Protocol):
    async def post(
        self, url: str, secret: str, delivery_id: str, payload: dict[str, Any]
    ) -> int: ...
