"""The wallet's side of the card processor: verify, charge, refund, pay out over HTTP."""

from __future__ import annotations

from typing import Any

from services.wallet.clients.http import JsonClient
from services.wallet.domain.top_ups import PendingTopUp, VerifiedCard


class CardProcessor:
    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        self._http = JsonClient(base_url, timeout_seconds=timeout_seconds)

    async def close(self) -> None:
        await self._http.close()

    async def verify_card(self, token: str, three_ds_transaction_id: str) -> VerifiedCard:
        reply = await self._http.post(
            "/v1/cards/verify",
            {"token": token, "three_ds_transaction_id": three_ds_transaction_id},
        )
        return VerifiedCard(brand=str(reply.get("brand", "card")), last4=str(reply["last4"]))

    async def take(self, top_up: PendingTopUp) -> str:
        """Charge the card of a reserved top-up; returns the processor's charge id."""
        return await self.charge(
            top_up.source, top_up.amount, idempotency_key=top_up.idempotency_key
        )

    async def charge(self, token: str, amount: int, *, idempotency_key: str) -> str:
        reply = await self._http.post(
            "/v1/charges",
            {
                "token": token,
                "amount": amount,
                "currency": "JPY",
                "idempotency_key": idempotency_key,
            },
        )
        return str(reply["charge_id"])

    async def refund(self, charge_id: str, amount: int, *, idempotency_key: str) -> str:
        reply = await self._http.post(
            "/v1/refunds",
            {"charge_id": charge_id, "amount": amount, "idempotency_key": idempotency_key},
        )
        return str(reply["refund_id"])

    async def payout(self, payout: dict[str, Any]) -> str:
        reply = await self._http.post("/v1/payouts", payout)
        return str(reply["transfer_id"])
