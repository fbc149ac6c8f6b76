"""The wallet's side of the card processor: verify, charge, refund, pay out over HTTP.

A decline (4xx) is definitive. A timeout, a 5xx or a broken connection is
ambiguous: the processor may have acted, so callers keep the operation pending
and retry with the same idempotency key, which the processor deduplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp


class ProcessorDeclined(Exception):
    """The processor refused; ``reason`` is its error code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProcessorUnavailable(Exception):
    """No definitive answer: retry with the same idempotency key."""


@dataclass(frozen=True)
class VerifiedCard:
    brand: str
    last4: str


class CardProcessor:
    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self._base_url + path, json=body) as response:
                payload: dict[str, Any] = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise ProcessorUnavailable(f"{path}: {type(error).__name__}") from error
        if status >= 500:
            raise ProcessorUnavailable(f"{path}: HTTP {status}")
        if status >= 400:
            raise ProcessorDeclined(str(payload.get("error", f"http_{status}")))
        return payload

    async def verify_card(self, token: str, three_ds_transaction_id: str) -> VerifiedCard:
        reply = await self._post(
            "/v1/cards/verify",
            {"token": token, "three_ds_transaction_id": three_ds_transaction_id},
        )
        return VerifiedCard(brand=str(reply.get("brand", "card")), last4=str(reply["last4"]))

    async def charge(self, token: str, amount: int, *, idempotency_key: str) -> str:
        reply = await self._post(
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
        reply = await self._post(
            "/v1/refunds",
            {"charge_id": charge_id, "amount": amount, "idempotency_key": idempotency_key},
        )
        return str(reply["refund_id"])

    async def payout(self, payout: dict[str, Any]) -> str:
        reply = await self._post("/v1/payouts", payout)
        return str(reply["transfer_id"])
