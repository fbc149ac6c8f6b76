"""What happened after decisions (outcomes reported by identity and wallet), and the
decisions themselves as operators list them."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.risk.domain.decisions import StoredDecision
from services.risk.domain.network import subnet_of
from services.risk.domain.outcomes import SIGNAL_OUTCOMES, OutcomeEvent
from services.risk.storage import decisions as decision_store
from services.risk.storage import outcomes as outcome_store
from services.risk.use_cases.counting import Counting
from services.risk.use_cases.ports import CountryLookup
from services.runtime.batching import each_at_most

# Outcomes of one RecordOutcomes call that each need a transaction of their own run at
# most this many at once, so a burst leaves connections to the assessments.
OWN_TRANSACTIONS_AT_ONCE = 4


class Decisions:
    def __init__(self, pool: asyncpg.Pool, counting: Counting, countries: CountryLookup) -> None:
        self._pool = pool
        self._counting = counting
        self._countries = countries

    async def record_outcome(self, event: OutcomeEvent) -> None:
        """Store the outcome and update the signals it feeds."""
        event = self._located(event)
        if await outcome_store.record_outcome(self._pool, event):
            self._counting.outcome(event)

    async def record_outcomes(self, events: Sequence[OutcomeEvent]) -> None:
        """Store each outcome as ``record_outcome`` would: those that feed stored
        state each in its own transaction, the rest together in one statement."""
        located = [self._located(event) for event in events]
        plain = [event for event in located if event.outcome not in SIGNAL_OUTCOMES]
        fed = [event for event in located if event.outcome in SIGNAL_OUTCOMES]
        stored = await outcome_store.record_plain_outcomes(self._pool, plain)
        for event, new in zip(plain, stored, strict=True):
            if new:
                self._counting.outcome(event)
        await each_at_most(OWN_TRANSACTIONS_AT_ONCE, fed, self.record_outcome)

    def _located(self, event: OutcomeEvent) -> OutcomeEvent:
        if not event.ip or event.subnet:
            return event
        return dataclasses.replace(
            event, subnet=subnet_of(event.ip), country=self._countries(event.ip)
        )

    async def page(
        self,
        *,
        account_id: str,
        ip: str,
        since: datetime | None,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[StoredDecision]:
        return await decision_store.list_decisions(
            self._pool, account_id=account_id, ip=ip, since=since, limit=limit, after=after
        )
