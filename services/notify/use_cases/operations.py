"""Operators' view of deliveries: ListDeliveries, GetDeliveryStats,
ListDeadLetters, RetryDeadLetter."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from services.notify.domain.notices import DeliveryRecord, DeliveryStatRow
from services.notify.use_cases.ports import DeliveryLog
from services.runtime.errors import FailedPrecondition, NotFound


class Operations:
    def __init__(self, deliveries: DeliveryLog, *, on_requeued: Callable[[], None]) -> None:
        self._deliveries = deliveries
        self._on_requeued = on_requeued

    async def deliveries_of_account(
        self, account_id: uuid.UUID, *, before_seq: int | None, limit: int
    ) -> list[DeliveryRecord]:
        return await self._deliveries.of_account(account_id, before_seq=before_seq, limit=limit)

    async def stats(self, since: datetime, until: datetime) -> list[DeliveryStatRow]:
        return await self._deliveries.stats(since, until)

    async def dead_letters(self, *, before_seq: int | None, limit: int) -> list[DeliveryRecord]:
        return await self._deliveries.dead_letters(before_seq=before_seq, limit=limit)

    async def retry_dead(self, delivery_id: uuid.UUID) -> DeliveryRecord:
        record = await self._deliveries.retry_dead(delivery_id)
        if record is None:
            if await self._deliveries.get(delivery_id) is None:
                raise NotFound("DELIVERY_NOT_FOUND", "no such delivery")
            raise FailedPrecondition("DELIVERY_NOT_DEAD", "only a dead delivery can be retried")
        self._on_requeued()
        return record
