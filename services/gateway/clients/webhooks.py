"""Posting a signed event to a partner's URL."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from services.gateway.domain.signing import SIGNATURE_HEADER, sign


class DeliveryFailed(Exception):
    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


class WebhookSender:
    def __init__(self, timeout: float) -> None:
        # Redirects are not followed: a delivery goes to the registered URL only.
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def post(self, url: str, secret: str, delivery_id: str, payload: dict[str, Any]) -> int:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Mamoru-Webhooks/1",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            "Mamoru-Event-Id": str(payload.get("id", "")),
            "Mamoru-Delivery-Id": delivery_id,
        }
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise DeliveryFailed(None, f"{type(error).__name__}: {error}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(response.status_code, f"answered {response.status_code}")
        return response.status_code

    async def close(self) -> None:
        await self._client.aclose()
