"""Store payments: authorizations (holds), captures by code or hold, voids. SQL only.

A capture spends its code or hold and posts the payment in one transaction under
the merchant's idempotency key; the merchant's side of the entry is appended,
never updated in place, so many stores of one chain capture at once without
queueing on a merchant balance row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg

from services.runtime.errors import FailedPrecondition, NotFound
from services.wallet.clients.outbox import NOTICE_PAYMENT, OUTCOME_PAYMENT_CAPTURED, announce
from services.wallet.domain.merchants import StoreRow
from services.wallet.domain.payments import (
    CapturedHold,
    CodeHolder,
    authorization_invalid,
    authorize_scope,
    capture_scope,
    require_within_hold,
)
from services.wallet.domain.wallets import require_active, require_available
from services.wallet.storage import codes, idempotent, ledger, wallets


def insufficient_balance() -> FailedPrecondition:
    return FailedPrecondition("INSUFFICIENT_BALANCE", "the balance is too low")


class Payments:
    """``session_revoked`` is this replica's copy of identity's revocations."""

    def __init__(self, pool: asyncpg.Pool, session_revoked: Callable[[str], bool]) -> None:
        self._pool = pool
        self._session_revoked = session_revoked

    async def replay(self, scope: str, key: str, request_hash: str) -> dict[str, Any] | None:
        return await idempotent.replay(self._pool, scope, key, request_hash)

    async def authorize(
        self,
        *,
        code: str,
        amount: int,
        store: StoreRow,
        hold: timedelta,
        idempotency_key: str,
        request_hash: str,
    ) -> dict[str, Any]:
        async with idempotent.idempotent(
            self._pool, authorize_scope(store.merchant_id), idempotency_key, request_hash
        ) as claim:
            if claim.replayed is not None:
                return claim.replayed
            conn = claim.conn
            spent = await codes.spend(conn, code, "payment", self._session_revoked)
            wallet = await wallets.lock(conn, spent.wallet_id)
            require_active(wallet.status)
            require_available(amount, wallet.balance, await wallets.held(conn, spent.wallet_id))
            row = await conn.fetchrow(
                "insert into authorizations (id, wallet_id, merchant_id, store_id, amount,"
                " device_id, session_id, status, hold_expires_at)"
                " values ($1, $2, $3, $4, $5, $6, $7, 'held', now() + $8::interval)"
                " returning id, created_at, hold_expires_at",
                uuid.uuid4(),
                spent.wallet_id,
                store.merchant_id,
                store.id,
                amount,
                spent.device_id,
                spent.session_id,
                hold,
            )
            return await claim.finish(
                {
                    "movement_id": "",
                    "authorization_id": str(row["id"]),
                    "amount": amount,
                    "merchant_id": str(store.merchant_id),
                    "store_id": str(store.id),
                    "occurred_at": row["created_at"].isoformat(),
                    "hold_expires_at": row["hold_expires_at"].isoformat(),
                    "refunded": 0,
                }
            )

    async def authorization_holder(
        self, authorization_id: uuid.UUID, merchant_id: uuid.UUID
    ) -> CodeHolder:
        row = await self._pool.fetchrow(
            "select a.wallet_id, w.payer_id, a.device_id, a.session_id from authorizations a"
            " join wallets w on w.id = a.wallet_id where a.id = $1 and a.merchant_id = $2",
            authorization_id,
            merchant_id,
        )
        if row is None:
            raise NotFound("AUTHORIZATION_NOT_FOUND", "no such authorization")
        return CodeHolder(
            row["wallet_id"], row["payer_id"], row["device_id"], row["session_id"], None
        )

    async def capture_by_code(
        self,
        *,
        code: str,
        amount: int,
        store: StoreRow,
        merchant_name: str,
        idempotency_key: str,
        request_hash: str,
        decision_id: str = "",
    ) -> dict[str, Any]:
        async with idempotent.idempotent(
            self._pool, capture_scope(store.merchant_id), idempotency_key, request_hash
        ) as claim:
            if claim.replayed is not None:
                return claim.replayed
            spent = await codes.spend(claim.conn, code, "payment", self._session_revoked)
            return await claim.finish(
                await _capture(
                    claim.conn,
                    wallet_id=spent.wallet_id,
                    amount=amount,
                    store=store,
                    merchant_name=merchant_name,
                    session_id=spent.session_id,
                    decision_id=decision_id,
                    authorization_id=None,
                )
            )

    async def capture_authorization(
        self,
        *,
        authorization_id: uuid.UUID,
        amount: int,
        store: StoreRow,
        merchant_name: str,
        idempotency_key: str,
        request_hash: str,
    ) -> dict[str, Any]:
        async with idempotent.idempotent(
            self._pool, capture_scope(store.merchant_id), idempotency_key, request_hash
        ) as claim:
            if claim.replayed is not None:
                return claim.replayed
            hold = await self._take_hold(claim.conn, authorization_id, store.merchant_id)
            require_within_hold(amount, hold.amount)
            return await claim.finish(
                await _capture(
                    claim.conn,
                    wallet_id=hold.wallet_id,
                    amount=amount,
                    store=store,
                    merchant_name=merchant_name,
                    session_id=hold.session_id,
                    decision_id="",
                    authorization_id=authorization_id,
                )
            )

    async def _take_hold(
        self, conn: asyncpg.Connection, authorization_id: uuid.UUID, merchant_id: uuid.UUID
    ) -> CapturedHold:
        # The wallet is locked before the hold, in the same order as voiding a
        # session and the code paths (wallet, then its codes and holds), so none
        # can deadlock.
        holder = await conn.fetchval(
            "select wallet_id from authorizations where id = $1 and merchant_id = $2",
            authorization_id,
            merchant_id,
        )
        if holder is None:
            raise authorization_invalid()
        await wallets.lock(conn, holder)
        hold = await conn.fetchrow(
            "update authorizations set status = 'captured'"
            " where id = $1 and merchant_id = $2 and status = 'held'"
            " and hold_expires_at > now() and not exists (select 1 from revoked_sessions r"
            " where r.session_id = authorizations.session_id)"
            " returning wallet_id, amount, session_id",
            authorization_id,
            merchant_id,
        )
        # A hold made in a revoked session is money the payer no longer vouches for.
        if hold is None or self._session_revoked(hold["session_id"]):
            raise authorization_invalid()
        return CapturedHold(hold["wallet_id"], int(hold["amount"]), hold["session_id"])

    async def void_authorization(self, authorization_id: uuid.UUID, merchant_id: uuid.UUID) -> None:
        status = await self._pool.fetchval(
            "update authorizations set status = case when status = 'held' then 'voided'"
            " else status end where id = $1 and merchant_id = $2 returning status",
            authorization_id,
            merchant_id,
        )
        if status is None:
            raise NotFound("AUTHORIZATION_NOT_FOUND", "no such authorization")
        if status == "captured":
            raise FailedPrecondition("AUTHORIZATION_CAPTURED", "the authorization was captured")


async def _capture(
    conn: asyncpg.Connection,
    *,
    wallet_id: uuid.UUID,
    amount: int,
    store: StoreRow,
    merchant_name: str,
    session_id: str,
    decision_id: str,
    authorization_id: uuid.UUID | None,
) -> dict[str, Any]:
    # Exclusive, like every other movement of this wallet: a shared lock let a
    # capture read the balance before another capture of a hold committed and
    # the held sum after it, and spend money held for a third merchant.
    wallet = await wallets.lock(conn, wallet_id)
    require_active(wallet.status)
    # An authorization being captured has already left the held sum.
    require_available(amount, wallet.balance, await wallets.held(conn, wallet_id))
    try:
        posted = await ledger.post(
            conn,
            kind="payment",
            wallet_id=wallet_id,
            postings=[(wallet_id, -amount), (store.merchant_id, amount)],
            counterparty=merchant_name,
        )
    except asyncpg.CheckViolationError:
        # Another payment took the balance between the check and the posting.
        raise insufficient_balance() from None
    await conn.execute(
        "insert into payments (entry_id, wallet_id, merchant_id, store_id, authorization_id,"
        " amount) values ($1, $2, $3, $4, $5, $6)",
        posted.entry_id,
        wallet_id,
        store.merchant_id,
        store.id,
        authorization_id,
        amount,
    )
    await announce(
        conn,
        notice_kind=NOTICE_PAYMENT,
        outcome=OUTCOME_PAYMENT_CAPTURED,
        payer_id=wallet.payer_id,
        wallet_id=wallet_id,
        entry_id=posted.entry_id,
        amount=amount,
        balance_after=posted.balance_after,
        counterparty=merchant_name,
        occurred_at=posted.occurred_at,
        session_id=session_id,
        decision_id=decision_id,
    )
    return {
        "movement_id": str(posted.entry_id),
        "authorization_id": "" if authorization_id is None else str(authorization_id),
        "amount": amount,
        "merchant_id": str(store.merchant_id),
        "store_id": str(store.id),
        "occurred_at": posted.occurred_at.isoformat(),
        "hold_expires_at": "",
        "refunded": 0,
    }
