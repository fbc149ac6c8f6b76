"""What the use cases need from outside, as Protocols (adapters live in storage/,
clients/ and jobs.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from services.risk.domain.assess import LoginSignals
from services.risk.domain.decisions import StoredDecision
from services.risk.domain.policy import Policy
from services.risk.domain.rules import RuleBook
from services.risk.domain.tallies import Batch, Wanted
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
    """Each call counts the event being assessed and reads its windows (in memory; at
    most one round trip for what cannot be counted)."""

    async def login(
        self,
        *,
        ip: str,
        subnet: str,
        device_id: str,
        known_device: bool,
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
        """Store ``decision`` (with others, in one batch); returns once it is stored."""
        ...


class SharedCounts(Protocol):
    """Every replica's counts, in the database."""

    async def add(self, batch: Batch) -> None:
        """Add this replica's deltas to the totals, all or nothing."""
        ...

    async def read(
        self, wanted: Sequence[Wanted]
    ) -> tuple[Sequence[tuple[str, str, int, int, int, int]], Sequence[tuple[str, str, int, str]]]:
        """The totals per bucket (dimension, key, bucket, attempts, failures, unknown) of
        the ``wanted`` keys, and the identifiers (dimension, key, bucket, identifier)
        tried from those that keep them."""
        ...


class History(Protocol):
    """What an assessment cannot count, read by primary key."""

    async def previous_login(self, account_id: str) -> tuple[str | None, datetime | None]:
        """The country and time of the account's last successful sign-in."""
        ...

    async def last_credential_change(self, session_id: str) -> datetime | None:
        """The last credential change of the account of ``session_id``."""
        ...

    async def last_top_up(self, wallet_id: str) -> tuple[datetime | None, bool]:
        """The wallet's last top-up time and whether it came from a device new to the account."""
        ...


class PolicyInForce(Protocol):
    """The policy and rules this replica enforces now (kept in memory)."""

    @property
    def policy(self) -> Policy: ...

    @property
    def rules(self) -> RuleBook: ...
