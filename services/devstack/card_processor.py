"""A local card processor speaking a small REST protocol, for `make run` and tests.

Real processors tokenise the card in the app (the number never reaches Mamoru),
run 3-D Secure, then take server-side calls to verify, charge, refund and pay
out, each idempotent by key. This one keeps everything in memory and has
switches so tests and demos can make the next calls decline, fail or hang:

    POST /v1/cards            {"number"}                      -> token, 3-D Secure id
    POST /v1/cards/verify     {"token", "three_ds_transaction_id"}
    POST /v1/charges          {"token", "amount", "currency", "idempotency_key"}
    POST /v1/refunds          {"charge_id", "amount", "idempotency_key"}
    POST /v1/payouts          {"payout_id", "amount", bank fields}
    POST /sandbox/switches    {"decline_next": n, "fail_next": n, "hang_next": n}

`python -m services.devstack.card_processor` serves it on
WALLET_SANDBOX_PROCESSOR_PORT (8089).
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

# Longer than any client timeout: a hung call looks like a processor that never answers.
HANG_SECONDS = 60.0


@dataclass
class Charge:
    charge_id: str
    token: str
    amount: int
    refunded: int = 0


@dataclass
class SandboxProcessor:
    host: str = "127.0.0.1"
    port: int = 0
    cards: dict[str, dict[str, str]] = field(default_factory=dict)
    three_ds: dict[str, str] = field(default_factory=dict)
    charges: dict[str, Charge] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    decline_next: int = 0
    fail_next: int = 0
    hang_next: int = 0
    _by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    # Set at stop, so a hung call ends with the sandbox instead of delaying its shutdown.
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/cards", self._tokenise)
        app.router.add_post("/v1/cards/verify", self._verify)
        app.router.add_post("/v1/charges", self._charge)
        app.router.add_post("/v1/refunds", self._refund)
        app.router.add_post("/v1/payouts", self._payout)
        app.router.add_post("/sandbox/switches", self._switches)
        self._runner, self.port = await serve_locally(app, self.host, self.port)

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def tokenise(self, number: str) -> tuple[str, str]:
        """What the app's processor SDK does: (card token, completed 3-D Secure id)."""
        token = "tok_" + secrets.token_hex(12)
        brand = {"4": "visa", "5": "mastercard", "3": "jcb"}.get(number[:1], "card")
        self.cards[token] = {"brand": brand, "last4": number[-4:]}
        three_ds_id = "3ds_" + secrets.token_hex(12)
        self.three_ds[three_ds_id] = token
        return token, three_ds_id

    async def _switched(self) -> web.Response | None:
        """Apply the failure switches to the call being served."""
        if self.hang_next > 0:
            self.hang_next -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), HANG_SECONDS)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"error": "processor_error"}, status=503)
        return None

    async def _tokenise(self, request: web.Request) -> web.Response:
        body = await request.json()
        number = str(body.get("number", ""))
        if not (12 <= len(number) <= 19 and number.isdigit()):
            return web.json_response({"error": "invalid_number"}, status=400)
        token, three_ds_id = self.tokenise(number)
        return web.json_response(
            {"token": token, "three_ds_transaction_id": three_ds_id, **self.cards[token]}
        )

    async def _verify(self, request: web.Request) -> web.Response:
        if (switched := await self._switched()) is not None:
            return switched
        body = await request.json()
        token = str(body.get("token", ""))
        if token not in self.cards:
            return web.json_response({"error": "unknown_token"}, status=404)
        if self.three_ds.get(str(body.get("three_ds_transaction_id", ""))) != token:
            return web.json_response({"error": "three_ds_failed"}, status=402)
        return web.json_response({"authenticated": True, **self.cards[token]})

    async def _charge(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = f"charge:{body.get('idempotency_key', '')}"
        if key in self._by_key:
            return web.json_response(self._by_key[key], status=201)
        if (switched := await self._switched()) is not None:
            return switched
        if self.decline_next > 0:
            self.decline_next -= 1
            return web.json_response({"error": "card_declined"}, status=402)
        token = str(body.get("token", ""))
        if token not in self.cards:
            return web.json_response({"error": "unknown_token"}, status=404)
        charge = Charge("ch_" + secrets.token_hex(12), token, int(body["amount"]))
        self.charges[charge.charge_id] = charge
        self._by_key[key] = {"charge_id": charge.charge_id, "status": "succeeded"}
        return web.json_response(self._by_key[key], status=201)

    async def _refund(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = f"refund:{body.get('idempotency_key', '')}"
        if key in self._by_key:
            return web.json_response(self._by_key[key], status=201)
        if (switched := await self._switched()) is not None:
            return switched
        charge = self.charges.get(str(body.get("charge_id", "")))
        amount = int(body.get("amount", 0))
        if charge is None:
            return web.json_response({"error": "unknown_charge"}, status=404)
        if amount <= 0 or charge.refunded + amount > charge.amount:
            return web.json_response({"error": "refund_exceeds_charge"}, status=400)
        charge.refunded += amount
        refund_id = "re_" + secrets.token_hex(12)
        self.refunds[refund_id] = {"charge_id": charge.charge_id, "amount": amount}
        self._by_key[key] = {"refund_id": refund_id, "status": "succeeded"}
        return web.json_response(self._by_key[key], status=201)

    async def _payout(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = f"payout:{body.get('payout_id', '')}"
        if key in self._by_key:
            return web.json_response(self._by_key[key], status=201)
        if (switched := await self._switched()) is not None:
            return switched
        transfer_id = "tr_" + secrets.token_hex(12)
        self.payouts[transfer_id] = dict(body)
        self._by_key[key] = {"transfer_id": transfer_id, "status": "queued"}
        return web.json_response(self._by_key[key], status=201)

    async def _switches(self, request: web.Request) -> web.Response:
        body = await request.json()
        for name in ("decline_next", "fail_next", "hang_next"):
            if name in body:
                setattr(self, name, max(int(body[name]), 0))
        return web.json_response(
            {
                "decline_next": self.decline_next,
                "fail_next": self.fail_next,
                "hang_next": self.hang_next,
            }
        )


async def _serve() -> None:
    port = int(os.environ.get("WALLET_SANDBOX_PROCESSOR_PORT", "8089"))
    processor = SandboxProcessor(port=port)
    await processor.start()
    print(f"sandbox card processor on {processor.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await processor.stop()


if __name__ == "__main__":
    asyncio.run(_serve())
