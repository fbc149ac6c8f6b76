"""What the wallet asks risk before money moves (the client in clients/risk.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The top-up channels, by the names the ledger records.
CARD, POINTS, CASH_REGISTER, ATM = "card", "points", "cash_register", "atm"


@dataclass(frozen=True)
class TopUpCheck:
    wallet_id: str
    payer_id: str
    amount: int
    channel: str
    session_id: str
    funding_source_id: str = ""
    new_funding_source: bool = False
    # The app's description of itself, passed to risk as the app sent it.
    client: Any = None


@dataclass(frozen=True)
class PaymentCheck:
    wallet_id: str
    payer_id: str
    amount: int
    merchant_id: str
    merchant_category: str
    store_id: str
    device_id: str
    session_id: str
    basket: tuple[int, ...] = field(default=())
