"""Money back: a store's refund of a payment, and making good a confirmed-fraud case."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.runtime.errors import FailedPrecondition, Unavailable
from services.wallet.domain.codes import fingerprint
from services.wallet.domain.compensation import CARD_REFUND, CompensationRun
from services.wallet.domain.top_ups import FundingRefused, FundingUnavailable
from services.wallet.use_cases.ports import (
    CardRefunds,
    CompensationBook,
    RefundLedger,
    Result,
    Risk,
)


class Refunds:
    def __init__(
        self, refunds: RefundLedger, compensation: CompensationBook, cards: CardRefunds, risk: Risk
    ) -> None:
        self._refunds = refunds
        self._compensation = compensation
        self._cards = cards
        self._risk = risk

    async def refund(
        self,
        *,
        payment_id: uuid.UUID,
        amount: int,
        merchant_id: uuid.UUID | None,
        idempotency_key: str,
    ) -> Result:
        """``merchant_id`` limits a store system to its own payments; operators pass None."""
        return await self._refunds.refund(
            payment_id=payment_id,
            amount=amount,
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            request_hash=fingerprint({"amount": amount}),
        )

    async def compensate_case(self, case_id: uuid.UUID, reason: str) -> CompensationRun:
        movement_ids = []
        for raw in await self._risk.confirmed_movements(str(case_id)):
            try:
                movement_ids.append(uuid.UUID(raw))
            except ValueError:
                continue
        return await compensate_movements(
            self._compensation,
            self._cards,
            case_id=case_id,
            movement_ids=movement_ids,
            reason=reason,
        )


async def compensate_movements(
    store: CompensationBook,
    cards: CardRefunds,
    *,
    case_id: uuid.UUID,
    movement_ids: Sequence[uuid.UUID],
    reason: str,
) -> CompensationRun:
    """Make good every unauthorized movement of a case, once, however often it runs."""
    movements = await store.movements_for_compensation(movement_ids)
    await store.plan_compensation(case_id, movements, reason)
    newly_paid = 0
    # Wallet credits come first (the lines are ordered so), then card reversals.
    for line in await store.compensation_lines(case_id):
        if line.status == "paid":
            continue
        if line.method == CARD_REFUND:
            if line.processor_charge_id is None:
                raise FailedPrecondition("CHARGE_UNKNOWN", "the card charge is not recorded")
            try:
                await cards.refund(
                    line.processor_charge_id,
                    line.amount,
                    idempotency_key=f"compensation:{line.movement_id}",
                )
            except (FundingRefused, FundingUnavailable) as error:
                raise Unavailable(
                    "PROCESSOR_UNAVAILABLE",
                    "a card refund failed; run the compensation again",
                    metadata={"movement_id": str(line.movement_id), "error": str(error)},
                ) from None
        if await store.settle_line(case_id, line.movement_id):
            newly_paid += 1
    return CompensationRun(await store.compensation_lines(case_id), newly_paid)
