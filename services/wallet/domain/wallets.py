"""A payer's wallet and the cards that fund it, and the rules on its status."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.runtime.errors import FailedPrecondition
from services.runtime.tokens import TokenClaims


@dataclass(frozen=True)
class WalletRow:
    id: uuid.UUID
    payer_id: str
    status: str
    frozen_reason: str
    balance: int
    created_at: datetime


@dataclass(frozen=True)
class LockedWallet:
    """The wallet as a movement sees it while it holds the wallet's lock."""

    status: str
    payer_id: str
    balance: int


@dataclass(frozen=True)
class FundingSourceRow:
    id: uuid.UUID
    wallet_id: uuid.UUID
    processor_token: str
    brand: str
    last4: str
    created_at: datetime
    new_source: bool


def require_active(status: str) -> None:
    if status == "frozen":
        raise FailedPrecondition("WALLET_FROZEN", "the wallet is frozen")
    if status == "closed":
        raise FailedPrecondition("WALLET_CLOSED", "the wallet is closed")


def require_available(amount: int, balance: int, held: int) -> None:
    """Money spent must be in the wallet and not held for another merchant."""
    if amount > balance - held:
        raise FailedPrecondition("INSUFFICIENT_BALANCE", "the balance is too low")


def require_recent_auth(claims: TokenClaims, max_age_seconds: int) -> None:
    """Sensitive operations need a sign-in or step-up this recent."""
    if datetime.now(UTC) - claims.auth_time > timedelta(seconds=max_age_seconds):
        raise FailedPrecondition(
            "STEP_UP_REQUIRED",
            "confirm it is you, then try again",
            metadata={"max_auth_age_seconds": str(max_age_seconds)},
        )
