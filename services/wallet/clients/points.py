"""The wallet's side of the group's loyalty program: redeem a member's points over HTTP.

Points are the program's money, not ours: a points top-up is credited only after
the program has taken the points.
"""

from __future__ import annotations

from services.wallet.clients.http import JsonClient
from services.wallet.domain.top_ups import PendingTopUp


class PointsProgram:
    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        self._http = JsonClient(base_url, timeout_seconds=timeout_seconds)

    async def close(self) -> None:
        await self._http.close()

    async def take(self, top_up: PendingTopUp) -> str:
        """Redeem the points of a reserved top-up; returns the program's redemption id."""
        return await self.redeem(
            top_up.source, top_up.amount, idempotency_key=top_up.idempotency_key
        )

    async def redeem(self, member_id: str, points: int, *, idempotency_key: str) -> str:
        """Take ``points`` from the member; returns the program's redemption id."""
        body = {"member_id": member_id, "points": points, "idempotency_key": idempotency_key}
        reply = await self._http.post("/v1/redemptions", body)
        return str(reply["redemption_id"])
