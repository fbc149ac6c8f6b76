"""The wallet's side of the group's loyalty program: redeem a member's points over HTTP.

Points are the program's money, not ours: a points top-up is credited only after
the program has taken the points. A refusal (4xx: unknown member, too few
points) is definitive. A timeout, a 5xx or a broken connection is ambiguous: the
points may be gone, so callers keep the top-up pending and retry with the same
idempotency key, which the program deduplicates.
"""

from __future__ import annotations

from typing import Any

import aiohttp


class PointsRefused(Exception):
    """The program refused the redemption; ``reason`` is its error code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PointsUnavailable(Exception):
    """No definitive answer: retry with the same idempotency key."""


class PointsProgram:
    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def redeem(self, member_id: str, points: int, *, idempotency_key: str) -> str:
        """Take ``points`` from the member; returns the program's redemption id."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = {"member_id": member_id, "points": points, "idempotency_key": idempotency_key}
        try:
            async with self._session.post(self._base_url + "/v1/redemptions", json=body) as reply:
                payload: dict[str, Any] = await reply.json(content_type=None)
                status = reply.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise PointsUnavailable(type(error).__name__) from error
        if status >= 500:
            raise PointsUnavailable(f"HTTP {status}")
        if status >= 400:
            raise PointsRefused(str(payload.get("error", f"http_{status}")))
        return str(payload["redemption_id"])
