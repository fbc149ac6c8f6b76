"""Webhooks: a capture's event reaches the partner signed, is retried after the
receiver fails, shows in the delivery log and can be sent again; a partner holds
only so many subscriptions."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest_asyncio
from aiohttp import web

from services.devstack.stack import free_port
from services.gateway.domain.signing import SIGNATURE_HEADER, verify
from tests.e2e.gateway.conftest import Gateway, eventually


@dataclass
class Receiver:
    """A partner's webhook endpoint that fails its first ``failures`` requests."""

    failures: int = 1
    received: list[tuple[bytes, dict[str, str], int]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 500 if len(self.received) < self.failures else 200
        self.received.append((body, dict(request.headers), status))
        return web.Response(status=status)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    hook.url = f"http://127.0.0.1:{port}/hooks"
    try:
        yield hook
    finally:
        await runner.cleanup()


async def test_a_capture_event_arrives_signed_and_is_retried_after_the_receiver_fails(
    gateway: Gateway, receiver: Receiver
) -> None:
    client_id, secret = await gateway.partner()
    token = await gateway.token(client_id, secret)
    headers = {"Authorization": f"Bearer {token}"}
    subscribed = await gateway.http.post(
        f"{gateway.url}/v1/webhook-subscriptions",
        json={"url": receiver.url, "events": ["payment.captured"]},
        headers=headers,
    )
    assert subscribed.status_code == 201, subscribed.text
    signing_secret = subscribed.json()["secret"]

    captured = await gateway.http.post(
        f"{gateway.url}/v1/payments",
        json={
            "code": await gateway.code(),
            "amount": {"amount_minor": 400, "currency": "JPY"},
            "store_id": gateway.merchant.store_ids[0],
        },
        headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert captured.status_code == 201, captured.text

    async def delivered() -> bool:
        return any(status == 200 for _, _, status in receiver.received)

    await eventually(delivered, within=60)
    assert [status for _, _, status in receiver.received] == [500, 200]
    for body, sent, _ in receiver.received:
        # The documented recipe: HMAC-SHA256 over "<t>.<raw body>" with the secret.
        assert verify(signing_secret, body, sent[SIGNATURE_HEADER])
        assert not verify(signing_secret + "x", body, sent[SIGNATURE_HEADER])
    body, sent, _ = receiver.received[-1]
    event = json.loads(body)
    assert event["type"] == "payment.captured"
    assert event["data"]["id"] == captured.json()["id"]

    async def logged() -> bool:
        log = await gateway.http.get(f"{gateway.url}/v1/webhook-deliveries", headers=headers)
        rows = log.json()["deliveries"]
        return bool(rows) and rows[0]["state"] == "delivered"

    await eventually(logged, within=60)
    log = (await gateway.http.get(f"{gateway.url}/v1/webhook-deliveries", headers=headers)).json()
    delivery = log["deliveries"][0]
    assert delivery["attempts"] == 2 and delivery["last_status"] == 200

    replay = await gateway.http.post(
        f"{gateway.url}/v1/webhook-deliveries/{delivery['id']}/replay", headers=headers
    )
    assert replay.status_code == 202

    async def sent_again() -> bool:
        return len(receiver.received) == 3

    await eventually(sent_again, within=60)
    again, again_headers, _ = receiver.received[-1]
    assert json.loads(again)["id"] == event["id"]
    assert again_headers["Mamoru-Delivery-Id"] == delivery["id"]

    foreign_id, foreign_secret = await gateway.partner("webhooks:manage")
    foreign = await gateway.token(foreign_id, foreign_secret)
    refused = await gateway.http.post(
        f"{gateway.url}/v1/webhook-deliveries/{delivery['id']}/replay",
        headers={"Authorization": f"Bearer {foreign}"},
    )
    assert refused.status_code == 404


async def test_past_its_subscription_cap_a_partner_gets_a_409_problem(
    gateway: Gateway, receiver: Receiver
) -> None:
    client_id, secret = await gateway.partner("webhooks:manage")
    headers = {"Authorization": f"Bearer {await gateway.token(client_id, secret)}"}
    body = {"url": receiver.url, "events": ["payment.captured"]}
    url = f"{gateway.url}/v1/webhook-subscriptions"
    for _ in range(3):
        assert (await gateway.http.post(url, json=body, headers=headers)).status_code == 201
    refused = await gateway.http.post(url, json=body, headers=headers)
    assert refused.status_code == 409
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["reason"] == "TOO_MANY_SUBSCRIPTIONS"
    held = (await gateway.http.get(url, headers=headers)).json()["subscriptions"]
    assert len(held) == 3
    removed = await gateway.http.delete(f"{url}/{held[0]['id']}", headers=headers)
    assert removed.status_code == 204
    assert (await gateway.http.post(url, json=body, headers=headers)).status_code == 201
