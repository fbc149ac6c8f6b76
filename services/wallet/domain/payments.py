"""Store payments: who a code or hold belongs to, and the rules of a refund."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from services.runtime.errors import FailedPrecondition, invalid


def capture_scope(merchant_id: uuid.UUID) -> str:
    """Where a merchant's capture keys live: two merchants may use the same key."""
    return f"capture:{merchant_id}"


def authorize_scope(merchant_id: uuid.UUID) -> str:
    return f"authorize:{merchant_id}"


def code_invalid() -> FailedPrecondition:
    return FailedPrecondition("CODE_INVALID", "the code is unknown, used or expired")


def authorization_invalid() -> FailedPrecondition:
    return FailedPrecondition(
        "AUTHORIZATION_INVALID", "the authorization is unknown, used or expired"
    )


@dataclass(frozen=True)
class CodeHolder:
    """Who a live one-time code belongs to, read before it is spent (for risk).

    ``code_id`` names the code row itself, so the capture spends exactly the code
    risk assessed; None for a hold, which has no code.
    """

    wallet_id: uuid.UUID
    payer_id: str
    device_id: str
    session_id: str
    channel: str | None
    code_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Presented:
    """What a register's request with a code finds before risk is asked: the first
    answer under its key (a retry), else who the code belongs to (None: dead or unknown)."""

    replayed: dict[str, Any] | None
    holder: CodeHolder | None


@dataclass(frozen=True)
class SpentCode:
    wallet_id: uuid.UUID
    device_id: str
    session_id: str
    channel: str | None


@dataclass(frozen=True)
class CapturedHold:
    wallet_id: uuid.UUID
    amount: int
    session_id: str


def require_within_hold(amount: int, held: int) -> None:
    if amount > held:
        raise invalid("amount.amount_minor", "must not exceed the authorized amount")


def require_refundable(amount: int, captured: int, refunded: int) -> None:
    left = captured - refunded
    if amount > left:
        raise FailedPrecondition(
            "REFUND_EXCEEDS_PAYMENT",
            "the refund exceeds what is left of the payment",
            metadata={"refundable_minor": str(left)},
        )
