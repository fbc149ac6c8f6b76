"""Payments and cash top-ups for a partner, each idempotent under its key.

One skeleton serves every mutating call: claim the key with the body's hash
(another body → 409), replay a finished answer, otherwise call the wallet with
a key namespaced by partner, then store the answer, the payment as the wallet
returned it and the partner's webhook events in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.gateway.domain.errors import Refusal, not_found
from services.gateway.domain.idempotency import body_hash, key_reused, wallet_key
from services.gateway.domain.partners import Partner, require_merchant, require_store
from services.gateway.domain.payments import PaymentRecord, Sale, WalletPayment
from services.gateway.domain.sealing import SecretBox
from services.gateway.storage import partners as partner_store
from services.gateway.storage import payments as payment_store
from services.gateway.storage import requests as request_store
from services.gateway.storage import webhooks as webhook_store
from services.gateway.use_cases.partners import open_merchant_key
from services.gateway.use_cases.ports import Wallet

# Refusals that are the answer to this request, replayed for its key; anything
# else (the wallet unreachable, our own limits) leaves the key free to retry.
_FINAL_REFUSALS = (403, 404, 422)


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool = False
    records: list[PaymentRecord] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _record(partner: Partner, payment: WalletPayment, status: str) -> PaymentRecord:
    return PaymentRecord(
        payment_id=payment.movement_id or payment.authorization_id,
        partner_id=partner.partner_id,
        merchant_id=payment.merchant_id,
        store_id=payment.store_id,
        authorization_id=payment.authorization_id,
        movement_id=payment.movement_id,
        status=status,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        refunded_minor=payment.refunded_minor,
        occurred_at=payment.occurred_at or datetime.now(UTC),
        hold_expires_at=payment.hold_expires_at,
    )


def _sale(partner: Partner, key: str, body: dict[str, Any]) -> Sale:
    return Sale(
        store_id=uuid.UUID(body["store_id"]),
        amount_minor=body["amount"]["amount_minor"],
        currency=body["amount"]["currency"],
        basket=tuple(body.get("basket_categories", ())),
        idempotency_key=wallet_key(partner.client_id, key),
        code=body.get("code") or "",
        authorization_id=body.get("authorization_id") or "",
    )


class Payments:
    def __init__(self, pool: asyncpg.Pool, wallet: Wallet, box: SecretBox) -> None:
        self._pool = pool
        self._wallet = wallet
        self._box = box

    async def _merchant_key(self, merchant_id: uuid.UUID) -> str:
        sealed = await partner_store.sealed_merchant_key(self._pool, merchant_id)
        if sealed is None:
            raise Refusal(503, "MERCHANT_UNAVAILABLE", "this merchant cannot be reached now")
        return open_merchant_key(self._box, merchant_id, sealed)

    async def _store_merchant(self, partner: Partner, store_id: uuid.UUID) -> uuid.UUID:
        merchant_id = await partner_store.merchant_of_store(self._pool, store_id)
        return require_store(partner, merchant_id, store_id)

    async def _once(
        self,
        partner: Partner,
        key: str,
        operation: str,
        body: dict[str, Any],
        perform: Callable[[], Awaitable[Outcome]],
    ) -> Outcome:
        digest = body_hash(operation, body)
        claim, stored = await request_store.claim_key(
            self._pool, partner.partner_id, key, operation, digest
        )
        if claim == "different":
            raise key_reused()
        if stored is not None:
            return Outcome(stored.status_code, stored.body, replayed=True)
        try:
            outcome = await perform()
        except Refusal as refusal:
            if refusal.status in _FINAL_REFUSALS:
                async with self._pool.acquire() as conn, conn.transaction():
                    await request_store.store_answer(
                        conn, partner.partner_id, key, refusal.status, _problem_body(refusal)
                    )
            raise
        async with self._pool.acquire() as conn, conn.transaction():
            first = await request_store.store_answer(
                conn, partner.partner_id, key, outcome.status, outcome.body
            )
            for record in outcome.records:
                await payment_store.save(conn, record)
            if first:
                # A concurrent twin of this request answers the same, but only one emits.
                for event_type, data in outcome.events:
                    await webhook_store.emit(conn, partner.partner_id, event_type, data)
        return outcome

    async def authorize(self, partner: Partner, key: str, body: dict[str, Any]) -> Outcome:
        store_id = uuid.UUID(body["store_id"])
        merchant_id = await self._store_merchant(partner, store_id)

        async def perform() -> Outcome:
            payment = await self._wallet.authorize(
                await self._merchant_key(merchant_id), _sale(partner, key, body)
            )
            record = _record(partner, payment, "authorized")
            data = record.to_json()
            return Outcome(201, data, records=[record], events=[("payment.authorized", data)])

        return await self._once(partner, key, "authorize", body, perform)

    async def capture(self, partner: Partner, key: str, body: dict[str, Any]) -> Outcome:
        store_id = uuid.UUID(body["store_id"])
        merchant_id = await self._store_merchant(partner, store_id)
        authorization_id = body.get("authorization_id")
        held = None
        if authorization_id:
            held = await payment_store.get(self._pool, authorization_id)
            if held is None or held.partner_id != partner.partner_id:
                raise not_found("no such authorization for this partner")

        async def perform() -> Outcome:
            payment = await self._wallet.capture(
                await self._merchant_key(merchant_id), _sale(partner, key, body)
            )
            record = _record(partner, payment, "captured")
            data = record.to_json()
            records = [record]
            if held is not None:
                # The authorization's own entry now points at the captured payment.
                records.insert(
                    0,
                    PaymentRecord(
                        **{**held.__dict__, "status": "captured", "movement_id": record.movement_id}
                    ),
                )
            return Outcome(201, data, records=records, events=[("payment.captured", data)])

        return await self._once(partner, key, "capture", body, perform)

    async def _own_payment(self, partner: Partner, payment_id: str) -> PaymentRecord:
        record = await payment_store.get(self._pool, payment_id)
        if record is None or record.partner_id != partner.partner_id:
            raise not_found("no such payment for this partner")
        require_store(partner, record.merchant_id, record.store_id)
        return record

    async def void(self, partner: Partner, key: str, payment_id: str) -> Outcome:
        record = await self._own_payment(partner, payment_id)

        async def perform() -> Outcome:
            if record.status != "authorized" or not record.authorization_id:
                raise Refusal(422, "NOT_AN_AUTHORIZATION", "only an authorization can be voided")
            await self._wallet.void(
                await self._merchant_key(record.merchant_id),
                record.authorization_id,
                wallet_key(partner.client_id, key),
            )
            voided = PaymentRecord(**{**record.__dict__, "status": "voided"})
            data = voided.to_json()
            return Outcome(200, data, records=[voided], events=[("payment.voided", data)])

        return await self._once(partner, key, "void", {"payment_id": payment_id}, perform)

    async def refund(
        self, partner: Partner, key: str, payment_id: str, body: dict[str, Any]
    ) -> Outcome:
        record = await self._own_payment(partner, payment_id)

        async def perform() -> Outcome:
            if record.status != "captured":
                raise Refusal(422, "NOT_CAPTURED", "only a captured payment can be refunded")
            refund_id, after = await self._wallet.refund(
                await self._merchant_key(record.merchant_id),
                record.movement_id,
                body["amount"]["amount_minor"],
                body["amount"]["currency"],
                body.get("reason", ""),
                wallet_key(partner.client_id, key),
            )
            payment = _record(partner, after, "captured")
            data = {
                "id": refund_id,
                "amount": body["amount"],
                "payment": payment.to_json(),
            }
            return Outcome(201, data, records=[payment], events=[("payment.refunded", data)])

        return await self._once(partner, key, "refund", {"payment_id": payment_id, **body}, perform)

    async def accept_cash(self, partner: Partner, key: str, body: dict[str, Any]) -> Outcome:
        store_id = uuid.UUID(body["store_id"])
        merchant_id = await self._store_merchant(partner, store_id)

        async def perform() -> Outcome:
            top_up = await self._wallet.accept_cash(
                await self._merchant_key(merchant_id),
                body["code"],
                body["amount"]["amount_minor"],
                body["amount"]["currency"],
                store_id,
                wallet_key(partner.client_id, key),
            )
            occurred = top_up.occurred_at or datetime.now(UTC)
            # The person's balance stays between them and the wallet.
            data = {
                "id": top_up.movement_id,
                "store_id": str(store_id),
                "amount": {"amount_minor": top_up.amount_minor, "currency": top_up.currency},
                "occurred_at": occurred.isoformat(),
            }
            return Outcome(201, data, events=[("topup.accepted", data)])

        return await self._once(partner, key, "cash_top_up", body, perform)

    async def get(self, partner: Partner, payment_id: str) -> dict[str, Any]:
        return (await self._own_payment(partner, payment_id)).to_json()

    async def list_for_store(
        self, partner: Partner, store_id: uuid.UUID, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        await self._store_merchant(partner, store_id)
        before = _decode_cursor(cursor)
        records = await payment_store.list_for_store(
            self._pool, partner.partner_id, store_id, limit=limit + 1, before=before
        )
        page = records[:limit]
        next_cursor = None
        if len(records) > limit:
            last = page[-1]
            next_cursor = f"{last.occurred_at.isoformat()}|{last.payment_id}"
        return [r.to_json() for r in page], next_cursor

    async def merchants(self, partner: Partner) -> list[dict[str, Any]]:
        rows = await partner_store.merchants(self._pool, [g.merchant_id for g in partner.grants])
        return [{"id": str(r["merchant_id"]), "name": r["name"]} for r in rows]

    async def stores(self, partner: Partner, merchant_id: uuid.UUID) -> list[dict[str, Any]]:
        grant = require_merchant(partner, merchant_id)
        rows = await partner_store.stores_of(self._pool, merchant_id)
        return [
            {
                "id": str(r["store_id"]),
                "merchant_id": str(r["merchant_id"]),
                "store_code": r["store_code"],
                "name": r["name"],
            }
            for r in rows
            if grant.store_ids is None or r["store_id"] in grant.store_ids
        ]


def _decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    moment, _, payment_id = cursor.partition("|")
    try:
        return datetime.fromisoformat(moment), payment_id
    except ValueError:
        raise Refusal(
            422, "INVALID_ARGUMENT", "not a cursor from a previous page", "cursor"
        ) from None


def _problem_body(refusal: Refusal) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": refusal.reason,
        "status": refusal.status,
        "detail": refusal.detail,
        "reason": refusal.reason,
    }
    if refusal.field:
        body["field"] = refusal.field
    return body
