"""Paying balances out at wind-down or when a wallet closes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class PayoutAccount:
    bank_code: str
    branch_code: str
    account_number: str
    holder_name: str
    session_id: str


@dataclass(frozen=True)
class UnclaimedRow:
    wallet_id: uuid.UUID
    balance: int
    notified_at: datetime | None
