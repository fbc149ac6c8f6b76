"""Paying in a store: the payment code, holds, and one flow for every capture.

A payment by code runs: one read finds a finished request with the same key (a
retry gets the first answer even when its code is spent or a switch flipped
since) and who the code belongs to; risk is asked with no transaction open; then
one transaction spends that very code and posts under the key. A hold was
assessed when it was made, so capturing it skips risk.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.runtime.tokens import TokenClaims
from services.wallet.domain.codes import fingerprint
from services.wallet.domain.merchants import Merchant, StoreRow
from services.wallet.domain.payments import (
    CodeHolder,
    authorize_scope,
    capture_scope,
    code_invalid,
)
from services.wallet.domain.risk import PaymentCheck
from services.wallet.use_cases.ports import CodeBook, PaymentLedger, Result, Risk


@dataclass(frozen=True)
class Sale:
    """What a register asks for: an amount from a code or a hold, under its key."""

    merchant: Merchant
    store: StoreRow
    amount: int
    idempotency_key: str
    code: str = ""
    authorization_id: uuid.UUID | None = None
    # As the register sent it (the field, not the parsed id), so a retry hashes alike.
    authorization_field: str = ""
    basket: tuple[int, ...] = ()


class StorePayments:
    def __init__(
        self,
        codes: CodeBook,
        ledger: PaymentLedger,
        risk: Risk,
        *,
        payment_code_seconds: int,
        hold_seconds: int,
    ) -> None:
        self._codes = codes
        self._ledger = ledger
        self._risk = risk
        self._code_life = timedelta(seconds=payment_code_seconds)
        self._hold = timedelta(seconds=hold_seconds)

    async def issue_code(self, payer: TokenClaims) -> tuple[str, datetime]:
        self._risk.require_payments_open()
        # Bound to the token's device key: a device id the client sends proves nothing.
        return await self._codes.issue_payer_code(
            payer_id=payer.subject,
            purpose="payment",
            device_id=payer.device_key or "",
            session_id=payer.session_id,
            lifetime=self._code_life,
        )

    async def authorize(self, sale: Sale) -> Result:
        request_hash = fingerprint(
            {"code": sale.code, "amount": sale.amount, "store": str(sale.store.id)}
        )
        presented = await self._ledger.presented(
            authorize_scope(sale.merchant.id), sale.idempotency_key, request_hash, sale.code
        )
        if presented.replayed is not None:
            return presented.replayed
        await self._assess(sale, _live(presented.holder))
        return await self._ledger.authorize(
            code=sale.code,
            amount=sale.amount,
            store=sale.store,
            hold=self._hold,
            idempotency_key=sale.idempotency_key,
            request_hash=request_hash,
        )

    async def capture(self, sale: Sale) -> Result:
        request_hash = fingerprint(
            {
                "code": sale.code,
                "authorization_id": sale.authorization_field,
                "amount": sale.amount,
                "store": str(sale.store.id),
            }
        )
        scope = capture_scope(sale.merchant.id)
        if sale.authorization_id is not None:
            replayed = await self._ledger.replay(scope, sale.idempotency_key, request_hash)
            if replayed is not None:
                return replayed
            # Risk assessed the payment when the money was authorized.
            return await self._ledger.capture_authorization(
                authorization_id=sale.authorization_id,
                amount=sale.amount,
                store=sale.store,
                merchant_name=sale.merchant.name,
                idempotency_key=sale.idempotency_key,
                request_hash=request_hash,
            )
        presented = await self._ledger.presented(
            scope, sale.idempotency_key, request_hash, sale.code
        )
        if presented.replayed is not None:
            return presented.replayed
        holder = _live(presented.holder)
        decision_id = await self._assess(sale, holder)
        return await self._ledger.capture_by_code(
            holder=holder,
            amount=sale.amount,
            store=sale.store,
            merchant_name=sale.merchant.name,
            idempotency_key=sale.idempotency_key,
            request_hash=request_hash,
            decision_id=decision_id,
        )

    async def void(self, merchant: Merchant, authorization_id: uuid.UUID) -> None:
        await self._ledger.void_authorization(authorization_id, merchant.id)

    async def _assess(self, sale: Sale, holder: CodeHolder) -> str:
        self._risk.require_payments_open()
        return await self._risk.assess_payment(
            PaymentCheck(
                wallet_id=str(holder.wallet_id),
                payer_id=holder.payer_id,
                amount=sale.amount,
                merchant_id=str(sale.merchant.id),
                merchant_category=sale.merchant.category,
                store_id=str(sale.store.id),
                basket=sale.basket,
                device_id=holder.device_id,
                session_id=holder.session_id,
            )
        )


def _live(holder: CodeHolder | None) -> CodeHolder:
    """The code's holder; CODE_INVALID, before risk is asked, for a dead or unknown code."""
    if holder is None:
        raise code_invalid()
    return holder
