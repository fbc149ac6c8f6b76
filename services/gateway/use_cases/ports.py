"""What the use cases need from outside, as Protocols (the adapters live in clients/)."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any, Protocol, TypeAlias

from services.gateway.domain.payments import Sale, WalletPayment, WalletTopUp


class Wallet(Protocol):
    """The wallet's store RPCs, called with the merchant's key."""

    async def authorize(self, merchant_key: str, sale: Sale) -> WalletPayment: ...

    async def capture(self, merchant_key: str, sale: Sale) -> WalletPayment: ...

    async def void(
        self, merchant_key: str, authorization_id: str, idempotency_key: str
    ) -> None: ...

    async def refund(
        self,
        merchant_key: str,
        movement_id: str,
        amount_minor: int,
        currency: str,
        reason: str,
        idempotency_key: str,
    ) -> tuple[str, WalletPayment]:
        """(the refund's movement ID, the payment after it)."""
        ...

    async def accept_cash(
        self,
        merchant_key: str,
        code: str,
        amount_minor: int,
        currency: str,
        store_id: uuid.UUID,
        idempotency_key: str,
    ) -> WalletTopUp: ...


class KillSwitch(Protocol):
    def suspended(self, partner_id: uuid.UUID) -> bool:
        """True when risk's policy suspends the partner."""
        ...


class WebhookPoster(Protocol):
    async def post(
        self, url: str, secret: str, delivery_id: str, payload: dict[str, Any]
    ) -> int: ...


Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressResolver(Protocol):
    async def resolve(self, host: str) -> list[Address]:
        """Every address ``host`` resolves to; none when it does not resolve."""
        ...
