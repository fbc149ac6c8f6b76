"""Refunds of store payments; the total never exceeds what was captured. SQL only."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.runtime.errors import NotFound
from services.wallet.clients.outbox import (
    NOTICE_REFUND,
    OUTCOME_PAYMENT_REFUNDED,
    announcement,
    enqueue_all,
)
from services.wallet.domain.payments import require_refundable
from services.wallet.storage import idempotent, ledger


class Refunds:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def refund(
        self,
        *,
        payment_id: uuid.UUID,
        amount: int,
        merchant_id: uuid.UUID | None,
        idempotency_key: str,
        request_hash: str,
    ) -> dict[str, Any]:
        """Refund part or all of a payment.

        ``merchant_id`` limits a store system to its own payments; operators pass None.
        """
        async with idempotent.idempotent(
            self._pool, f"refund:{payment_id}", idempotency_key, request_hash
        ) as claim:
            if claim.replayed is not None:
                return claim.replayed
            conn = claim.conn
            payment = await conn.fetchrow(
                "select p.wallet_id, p.merchant_id, p.store_id, p.authorization_id, p.amount,"
                " p.refunded, p.created_at, m.name as merchant_name, w.payer_id"
                " from payments p join merchants m on m.id = p.merchant_id"
                " join wallets w on w.id = p.wallet_id where p.entry_id = $1 for update of p",
                payment_id,
            )
            if payment is None or (
                merchant_id is not None and payment["merchant_id"] != merchant_id
            ):
                raise NotFound("PAYMENT_NOT_FOUND", "no such payment")
            require_refundable(amount, int(payment["amount"]), int(payment["refunded"]))
            wallet_id = payment["wallet_id"]
            posted = await ledger.post(
                conn,
                kind="refund",
                wallet_id=wallet_id,
                postings=[(payment["merchant_id"], -amount), (wallet_id, amount)],
                counterparty=payment["merchant_name"],
                related=payment_id,
            )
            refunded = await conn.fetchval(
                "update payments set refunded = refunded + $2 where entry_id = $1"
                " returning refunded",
                payment_id,
                amount,
            )
            await enqueue_all(
                conn,
                announcement(
                    notice_kind=NOTICE_REFUND,
                    outcome=OUTCOME_PAYMENT_REFUNDED,
                    payer_id=payment["payer_id"],
                    wallet_id=wallet_id,
                    entry_id=posted.entry_id,
                    amount=amount,
                    balance_after=posted.balance_after,
                    counterparty=payment["merchant_name"],
                    occurred_at=posted.occurred_at,
                ),
            )
            return await claim.finish(
                {
                    "movement_id": str(posted.entry_id),
                    "payment": {
                        "movement_id": str(payment_id),
                        "authorization_id": str(payment["authorization_id"] or ""),
                        "amount": int(payment["amount"]),
                        "merchant_id": str(payment["merchant_id"]),
                        "store_id": str(payment["store_id"]),
                        "occurred_at": payment["created_at"].isoformat(),
                        "hold_expires_at": "",
                        "refunded": int(refunded),
                    },
                }
            )
