"""How a confirmed-fraud case is made good, movement by movement."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

CARD_REFUND = "card_refund"
WALLET_CREDIT = "wallet_credit"


@dataclass(frozen=True)
class UnauthorizedMovement:
    movement_id: str
    wallet_id: str
    kind: str  # the ledger entry kind: "top_up" or "payment"
    amount: int
    card_charge: bool  # a top-up charged to a card through the processor


def method_for(movement: UnauthorizedMovement) -> str | None:
    """Card top-ups go back to the card; payments are credited to the wallet.

    Cash and points top-ups cost the victim nothing, so they need no line.
    """
    if movement.kind == "top_up":
        return CARD_REFUND if movement.card_charge else None
    if movement.kind == "payment":
        return WALLET_CREDIT
    return None


def settlement_order(movements: list[UnauthorizedMovement]) -> list[UnauthorizedMovement]:
    """Payments first: crediting the wallet before reversing card top-ups keeps the
    reversal from finding a wallet already emptied by the attacker's spending."""
    return sorted(movements, key=lambda m: (m.kind != "payment", m.movement_id))


def split_reversal(amount: int, wallet_balance: int) -> tuple[int, int]:
    """A card reversal takes what is still in the wallet; Mamoru absorbs the rest.

    Returns (taken from the wallet, paid by the compensation account).
    """
    from_wallet = min(max(wallet_balance, 0), amount)
    return from_wallet, amount - from_wallet


@dataclass(frozen=True)
class CompensationLineRow:
    movement_id: uuid.UUID
    wallet_id: uuid.UUID
    amount: int
    method: str
    status: str
    compensation_entry_id: uuid.UUID | None
    processor_charge_id: str | None


@dataclass(frozen=True)
class CompensationRun:
    lines: list[CompensationLineRow]
    newly_paid: int
