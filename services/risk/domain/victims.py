"""Victims and amounts from the sessions an attacker's indicators reached."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Movement:
    movement_id: str
    wallet_id: str
    kind: str
    amount_minor: int
    currency: str
    occurred_at: datetime
    session_id: str


@dataclass
class AffectedAccount:
    account_id: str
    session_ids: list[str] = field(default_factory=list)
    movements: list[Movement] = field(default_factory=list)

    @property
    def total_minor(self) -> int:
        return sum(m.amount_minor for m in self.movements)


def affected_accounts(
    rows: Iterable[tuple[str, str, Movement | None]],
) -> list[AffectedAccount]:
    """Group (account, session, movement) rows by account, in account order.

    A movement is counted once even when it is reached through two sessions.
    """
    accounts: dict[str, AffectedAccount] = {}
    seen: set[str] = set()
    for account_id, session_id, movement in rows:
        account = accounts.setdefault(account_id, AffectedAccount(account_id))
        if session_id and session_id not in account.session_ids:
            account.session_ids.append(session_id)
        if movement is not None and movement.movement_id not in seen:
            seen.add(movement.movement_id)
            account.movements.append(movement)
    return [accounts[key] for key in sorted(accounts)]
