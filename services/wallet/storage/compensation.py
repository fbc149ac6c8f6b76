"""Compensation of a confirmed-fraud case: one line per movement owed. SQL only."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from services.wallet.clients.outbox import NOTICE_COMPENSATION, announcement, enqueue_all
from services.wallet.domain.compensation import (
    CARD_REFUND,
    WALLET_CREDIT,
    CompensationLineRow,
    UnauthorizedMovement,
    method_for,
    split_reversal,
)
from services.wallet.domain.ledger import CARD_CLEARING, COMPENSATION_EXPENSE
from services.wallet.storage import ledger, wallets


class Compensation:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def movements_for_compensation(
        self, movement_ids: Sequence[uuid.UUID]
    ) -> list[UnauthorizedMovement]:
        """Our own record of the movements risk named: kind, what is still owed, the card."""
        rows = await self._pool.fetch(
            "select e.id, e.kind, e.wallet_id,"
            " coalesce(p.amount - p.refunded, t.amount, 0) as amount,"
            " coalesce(t.channel = 'card', false) as card_charge"
            " from journal_entries e"
            " left join payments p on p.entry_id = e.id"
            " left join top_ups t on t.entry_id = e.id"
            " where e.id = any($1::uuid[]) and e.kind in ('top_up', 'payment')",
            list(movement_ids),
        )
        return [
            UnauthorizedMovement(
                movement_id=str(row["id"]),
                wallet_id=str(row["wallet_id"]),
                kind=row["kind"],
                amount=int(row["amount"]),
                card_charge=bool(row["card_charge"]),
            )
            for row in rows
        ]

    async def plan_compensation(
        self, case_id: uuid.UUID, movements: Sequence[UnauthorizedMovement], reason: str
    ) -> None:
        """Record one line per movement owed; a movement already settled is not added twice."""
        async with self._pool.acquire() as conn, conn.transaction():
            for movement in movements:
                method = method_for(movement)
                if method is None or movement.amount <= 0:
                    continue
                await conn.execute(
                    "insert into compensation_lines (movement_id, case_id, wallet_id, amount,"
                    " method, status, reason) values ($1, $2, $3, $4, $5, 'pending', $6)"
                    " on conflict (movement_id) do nothing",
                    uuid.UUID(movement.movement_id),
                    case_id,
                    uuid.UUID(movement.wallet_id),
                    movement.amount,
                    method,
                    reason,
                )

    async def compensation_lines(self, case_id: uuid.UUID) -> list[CompensationLineRow]:
        rows = await self._pool.fetch(
            "select c.movement_id, c.wallet_id, c.amount, c.method, c.status,"
            " c.compensation_entry_id, t.processor_charge_id"
            " from compensation_lines c left join top_ups t on t.entry_id = c.movement_id"
            " where c.case_id = $1"
            " order by c.method = 'card_refund', c.movement_id",
            case_id,
        )
        return [
            CompensationLineRow(
                movement_id=row["movement_id"],
                wallet_id=row["wallet_id"],
                amount=int(row["amount"]),
                method=row["method"],
                status=row["status"],
                compensation_entry_id=row["compensation_entry_id"],
                processor_charge_id=row["processor_charge_id"],
            )
            for row in rows
        ]

    async def settle_line(self, case_id: uuid.UUID, movement_id: uuid.UUID) -> bool:
        """Post one pending line; False when an earlier run already paid it."""
        async with self._pool.acquire() as conn, conn.transaction():
            line = await conn.fetchrow(
                "select wallet_id, amount, method from compensation_lines"
                " where movement_id = $1 and case_id = $2 and status = 'pending' for update",
                movement_id,
                case_id,
            )
            if line is None:
                return False
            wallet_id, amount = line["wallet_id"], int(line["amount"])
            wallet = await wallets.lock(conn, wallet_id)
            if line["method"] == WALLET_CREDIT:
                kind = "compensation"
                postings = [(wallet_id, amount), (COMPENSATION_EXPENSE, -amount)]
            else:
                kind = "top_up_reversal"
                from_wallet, from_expense = split_reversal(amount, wallet.balance)
                postings = [
                    (wallet_id, -from_wallet),
                    (COMPENSATION_EXPENSE, -from_expense),
                    (CARD_CLEARING, amount),
                ]
            posted = await ledger.post(
                conn,
                kind=kind,
                wallet_id=wallet_id,
                postings=postings,
                counterparty="compensation",
                related=movement_id,
                case_id=case_id,
            )
            await conn.execute(
                "update compensation_lines set status = 'paid', compensation_entry_id = $2"
                " where movement_id = $1",
                movement_id,
                posted.entry_id,
            )
            await enqueue_all(
                conn,
                announcement(
                    notice_kind=NOTICE_COMPENSATION,
                    outcome=None,
                    payer_id=wallet.payer_id,
                    wallet_id=wallet_id,
                    entry_id=posted.entry_id,
                    amount=amount,
                    balance_after=posted.balance_after,
                    counterparty="compensation" if line["method"] == WALLET_CREDIT else CARD_REFUND,
                    occurred_at=posted.occurred_at,
                ),
            )
            return True
