"""JSON over HTTP to the outside parties that hold the payer's money elsewhere
(the card processor, the loyalty program).

A refusal (4xx) is definitive. A timeout, a 5xx or a broken connection is
ambiguous: the outside party may have acted, so callers keep the operation
pending and retry with the same idempotency key, which it deduplicates.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from services.wallet.domain.top_ups import FundingRefused, FundingUnavailable


class JsonClient:
    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The answer's body; ``FundingRefused`` or ``FundingUnavailable`` otherwise."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self._base_url + path, json=body) as response:
                payload: dict[str, Any] = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise FundingUnavailable(f"{path}: {type(error).__name__}") from error
        if status >= 500:
            raise FundingUnavailable(f"{path}: HTTP {status}")
        if status >= 400:
            raise FundingRefused(str(payload.get("error", f"http_{status}")))
        return payload
