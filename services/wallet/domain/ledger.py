"""The ledger's fixed accounts and what reading it returns."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

CARD_CLEARING = uuid.UUID("00000000-0000-0000-0000-00000000c001")
CASH_CLEARING = uuid.UUID("00000000-0000-0000-0000-00000000c002")
POINTS_CLEARING = uuid.UUID("00000000-0000-0000-0000-00000000c003")
COMPENSATION_EXPENSE = uuid.UUID("00000000-0000-0000-0000-00000000c004")
PAYOUT_CLEARING = uuid.UUID("00000000-0000-0000-0000-00000000c005")

CLEARING_BY_CHANNEL = {
    "card": CARD_CLEARING,
    "cash_register": CASH_CLEARING,
    "atm": CASH_CLEARING,
    "points": POINTS_CLEARING,
}


@dataclass(frozen=True)
class Posted:
    """One journal entry as written: its id, time and the wallet's balance after it."""

    entry_id: uuid.UUID
    occurred_at: datetime
    balance_after: int


@dataclass(frozen=True)
class StatementLine:
    movement_id: uuid.UUID
    kind: str
    amount: int
    balance_after: int
    counterparty: str
    occurred_at: datetime
    related_movement_id: uuid.UUID | None


@dataclass(frozen=True)
class Reconciliation:
    differences: list[tuple[uuid.UUID, int, int]]
    ledger_sum: int
    unbalanced_entries: list[uuid.UUID]
    accounts_checked: int

    @property
    def balanced(self) -> bool:
        return not self.differences and self.ledger_sum == 0 and not self.unbalanced_entries
