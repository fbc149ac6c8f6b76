"""A local stand-in for the retail group's loyalty program, for `make run` and tests.

The loyalty program is an outside party: it keeps each member's points, and the
wallet redeems them over REST before it credits a top-up, with an idempotency
key so that a retry never redeems twice. Members are known by the wallet's
payer ID. This one keeps balances in memory and has switches so tests and
demos can make the next redemptions fail or lose their answer:

    POST /v1/redemptions  {"member_id", "points", "idempotency_key"}
        201 {"redemption_id", "status": "redeemed", "points_left"}
        402 {"error": "insufficient_points"}   404 {"error": "unknown_member"}
    GET  /v1/members/{member_id}                      -> {"member_id", "points"}
    POST /sandbox/members  {"member_id", "points"}    adds points (creates the member)
    POST /sandbox/switches {"fail_next": n, "hang_next": n}

``fail_next`` answers 503 without redeeming. ``hang_next`` redeems and then
never answers (until the stand-in stops): the case where only a retry with the
same key can tell the wallet that the points are gone.

`python -m services.devstack.points_program` serves it on
WALLET_SANDBOX_POINTS_PORT (8090).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from services.devstack.http_stand_in import serve_locally

# Longer than any client timeout: a hung call looks like a program that never answers.
HANG_SECONDS = 60.0


@dataclass
class SandboxPointsProgram:
    host: str = "127.0.0.1"
    port: int = 0
    balances: dict[str, int] = field(default_factory=dict)
    redemptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_next: int = 0
    hang_next: int = 0
    _by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    # Set at stop, so a hung call ends with the stand-in instead of delaying its shutdown.
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/redemptions", self._redeem)
        app.router.add_get("/v1/members/{member_id}", self._member)
        app.router.add_post("/sandbox/members", self._grant)
        app.router.add_post("/sandbox/switches", self._switches)
        self._runner, self.port = await serve_locally(app, self.host, self.port)

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def grant(self, member_id: str, points: int) -> int:
        """What the member earns by shopping; returns the new balance."""
        self.balances[member_id] = self.balances.get(member_id, 0) + points
        return self.balances[member_id]

    async def _redeem(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = str(body.get("idempotency_key", ""))
        if key in self._by_key:
            return web.json_response(self._by_key[key], status=201)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"error": "program_error"}, status=503)
        member_id = str(body.get("member_id", ""))
        points = body.get("points")
        if not key or not isinstance(points, int) or points <= 0:
            return web.json_response({"error": "invalid_request"}, status=400)
        if member_id not in self.balances:
            return web.json_response({"error": "unknown_member"}, status=404)
        if self.balances[member_id] < points:
            return web.json_response({"error": "insufficient_points"}, status=402)
        self.balances[member_id] -= points
        redemption_id = "rd_" + secrets.token_hex(12)
        self.redemptions[redemption_id] = {"member_id": member_id, "points": points}
        self._by_key[key] = {
            "redemption_id": redemption_id,
            "status": "redeemed",
            "points_left": self.balances[member_id],
        }
        if self.hang_next > 0:
            self.hang_next -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), HANG_SECONDS)
        return web.json_response(self._by_key[key], status=201)

    async def _member(self, request: web.Request) -> web.Response:
        member_id = request.match_info["member_id"]
        if member_id not in self.balances:
            return web.json_response({"error": "unknown_member"}, status=404)
        return web.json_response({"member_id": member_id, "points": self.balances[member_id]})

    async def _grant(self, request: web.Request) -> web.Response:
        body = await request.json()
        member_id = str(body.get("member_id", ""))
        points = body.get("points")
        if not member_id or not isinstance(points, int) or points < 0:
            return web.json_response({"error": "invalid_request"}, status=400)
        return web.json_response({"member_id": member_id, "points": self.grant(member_id, points)})

    async def _switches(self, request: web.Request) -> web.Response:
        body = await request.json()
        for name in ("fail_next", "hang_next"):
            if name in body:
                setattr(self, name, max(int(body[name]), 0))
        return web.json_response({"fail_next": self.fail_next, "hang_next": self.hang_next})


async def _serve() -> None:
    port = int(os.environ.get("WALLET_SANDBOX_POINTS_PORT", "8090"))
    program = SandboxPointsProgram(port=port)
    await program.start()
    print(f"sandbox points program on {program.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await program.stop()


if __name__ == "__main__":
    asyncio.run(_serve())
