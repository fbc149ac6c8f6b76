"""Fraud cases, the confirmation of an attacker's indicators, and the victim query."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.risk.domain import victims
from services.risk.domain.cases import Case, Indicators
from services.risk.storage import cases as case_store
from services.risk.storage import outcomes as outcome_store
from services.risk.use_cases.assessments import utc_now
from services.risk.use_cases.ports import Clock
from services.runtime.errors import FailedPrecondition, NotFound


@dataclass(frozen=True)
class OpenCase:
    idempotency_key: str
    source: str
    account_id: str
    wallet_id: str
    alert_id: str
    movement_id: str
    description: str


class Cases:
    def __init__(self, pool: asyncpg.Pool, *, clock: Clock = utc_now) -> None:
        self._pool = pool
        self._clock = clock

    async def open(self, command: OpenCase, *, caller: str) -> Case:
        return await case_store.open_case(
            self._pool,
            # Callers' keys live in one space per caller, so two services cannot collide.
            idempotency_key=f"{caller}:{command.idempotency_key}",
            source=command.source,
            account_id=command.account_id,
            wallet_id=command.wallet_id,
            alert_id=command.alert_id,
            movement_id=command.movement_id,
            description=command.description,
        )

    async def get(self, case_id: uuid.UUID) -> Case:
        case = await case_store.get_case(self._pool, case_id)
        if case is None:
            raise NotFound("CASE_NOT_FOUND", "no such case")
        return case

    async def page(
        self, *, status: str, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[Case]:
        return await case_store.list_cases(self._pool, status=status, limit=limit, after=after)

    async def update(
        self,
        case_id: uuid.UUID,
        *,
        status: str | None,
        assignee: str | None,
        note: str | None,
    ) -> Case:
        case = await case_store.update_case(
            self._pool, case_id, status=status, assignee=assignee, note=note
        )
        if case is None:
            raise NotFound("CASE_NOT_FOUND", "no such case")
        return case

    async def confirm_fraud(
        self, case_id: uuid.UUID, indicators: Indicators, *, actor: str, reason: str
    ) -> Case:
        # An open-ended window is closed now, so the case's victim query gives the
        # same answer on every later run.
        if indicators.window_end is None:
            indicators = dataclasses.replace(indicators, window_end=self._clock())
        case = await case_store.update_case(
            self._pool,
            case_id,
            status="confirmed_fraud",
            assignee=None,
            note=f"{actor}: fraud confirmed: {reason}",
            indicators=indicators,
        )
        if case is None:
            raise NotFound("CASE_NOT_FOUND", "no such case")
        return case

    async def indicators_of(self, case_id: uuid.UUID) -> Indicators:
        case = await self.get(case_id)
        if case.indicators is None:
            raise FailedPrecondition(
                "CASE_NOT_CONFIRMED", "confirm the case with its indicators first"
            )
        return case.indicators

    async def affected(self, indicators: Indicators) -> list[victims.AffectedAccount]:
        """The accounts the indicators reached in their window, and the money moved."""
        rows = await outcome_store.find_affected(
            self._pool,
            ips=indicators.ip_addresses,
            subnets=indicators.subnets,
            devices=indicators.device_ids,
            start=indicators.window_start,
            end=indicators.window_end or self._clock(),
        )
        return victims.affected_accounts(rows)
