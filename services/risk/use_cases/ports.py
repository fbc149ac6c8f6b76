"""What the use cases need from outside, as Protocols (adapters live in storage/,
clients/ and jobs.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from services.risk.domain.assess import LoginSignals
from services.risk.domain.decisions import StoredDecision
from services.risk.domain.policy import Policy
from services.risk.domain.rules import RuleBook
from services.risk.domain.windows import LoginWindows


class Clock(Protocol):
    def __call__(self) -> datetime:
        """Now, timezone-aware."""
        ...


class CountryLookup(Protocol):
    def __call__(self, ip: str) -> str:
        """The ISO 3166 country of ``ip``, or "" when unknown."""
        ...


class Signals(Protocol):
    """Each call counts the event being assessed and reads its windows in one round trip."""

    async def login(
        self,
        *,
        ip: str,
        subnet: str,
        account_id: str,
        identifier: str,
        unknown: bool,
        windows: LoginWindows,
    ) -> LoginSignals: ...

    async def registration(self, *, ip: str, bucket: int, since_bucket: int) -> int:
        """Sign-ups from ``ip`` before this one in the window."""
        ...

    async def top_up(
        self, *, wallet_id: str, session_id: str, bucket: int, since_bucket: int
    ) -> tuple[int, datetime | None]:
        """(top-ups of the wallet before this one in the window, the session's account's
        last credential change)."""
        ...

    async def payment(
        self, *, wallet_id: str, bucket: int, since_bucket: int
    ) -> tuple[int, datetime | None, bool]:
        """(payments before this one in the window, the last top-up's time, whether that
        top-up came from a device new to the account)."""
        ...


class DecisionLog(Protocol):
    async def add(self, decision: StoredDecision) -> None:
        """Keep ``decision``; it may be stored a moment later, in a batch."""
        ...

    async def flush(self) -> None:
        """Store every decision added so far."""
        ...


class PolicyInForce(Protocol):
    """The policy and rules this replica enforces now (kept in memory)."""

    @property
    def policy(self) -> Policy: ...

    @property
    def rules(self) -> RuleBook: ...
