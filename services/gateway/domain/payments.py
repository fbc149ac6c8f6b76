"""A payment as the gateway keeps it, and the events partners subscribe to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

EVENT_TYPES = (
    "payment.authorized",
    "payment.captured",
    "payment.voided",
    "payment.refunded",
    "topup.accepted",
)


@dataclass(frozen=True)
class Sale:
    """What a register asks of the wallet: hold or capture ``amount`` at a store."""

    store_id: uuid.UUID
    amount_minor: int
    currency: str
    basket: tuple[str, ...]
    idempotency_key: str
    code: str = ""
    authorization_id: str = ""


@dataclass(frozen=True)
class WalletPayment:
    """A payment or authorization as the wallet answered it."""

    movement_id: str
    authorization_id: str
    merchant_id: uuid.UUID
    store_id: uuid.UUID
    amount_minor: int
    currency: str
    refunded_minor: int
    occurred_at: datetime | None
    hold_expires_at: datetime | None


@dataclass(frozen=True)
class WalletTopUp:
    movement_id: str
    amount_minor: int
    currency: str
    occurred_at: datetime | None


@dataclass(frozen=True)
class PaymentRecord:
    """``payment_id`` is the capture's movement ID, or the authorization's ID until then."""

    payment_id: str
    partner_id: uuid.UUID
    merchant_id: uuid.UUID
    store_id: uuid.UUID
    authorization_id: str
    movement_id: str
    status: str
    amount_minor: int
    currency: str
    refunded_minor: int
    occurred_at: datetime
    hold_expires_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.payment_id,
            "status": self.status,
            "merchant_id": str(self.merchant_id),
            "store_id": str(self.store_id),
            "authorization_id": self.authorization_id or None,
            "movement_id": self.movement_id or None,
            "amount": {"amount_minor": self.amount_minor, "currency": self.currency},
            "refunded": {"amount_minor": self.refunded_minor, "currency": self.currency},
            "occurred_at": self.occurred_at.isoformat(),
            "hold_expires_at": self.hold_expires_at.isoformat() if self.hold_expires_at else None,
        }
