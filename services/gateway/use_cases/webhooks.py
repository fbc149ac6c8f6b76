"""Webhook subscriptions, the delivery log, replays, and delivering one outbox message."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from services.gateway.clients.webhooks import DeliveryFailed
from services.gateway.domain.errors import invalid, not_found
from services.gateway.domain.partners import Partner
from services.gateway.domain.payments import EVENT_TYPES
from services.gateway.domain.sealing import SecretBox
from services.gateway.storage import webhooks as store
from services.gateway.use_cases.ports import WebhookPoster
from services.runtime.outbox import OutboxMessage

PURPOSE = "webhook-secret"


def _subscription_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["subscription_id"]),
        "url": row["url"],
        "events": list(row["events"]),
        "created_at": row["created_at"].isoformat(),
    }


def _delivery_json(row: dict[str, Any]) -> dict[str, Any]:
    def when(name: str) -> str | None:
        value = row.get(name)
        return value.isoformat() if value is not None else None

    return {
        "id": str(row["delivery_id"]),
        "subscription_id": str(row["subscription_id"]),
        "event_id": str(row["event_id"]),
        "event_type": row["event_type"],
        "state": row["state"],
        "attempts": row["attempts"],
        "last_status": row["last_status"],
        "last_error": row["last_error"],
        "created_at": when("created_at"),
        "last_attempt_at": when("last_attempt_at"),
        "delivered_at": when("delivered_at"),
    }


async def reaches_only_public_addresses(hostname: str) -> bool:
    """True when every address ``hostname`` resolves to is a public one.

    A partner's URL must not turn the gateway into a way into our own network
    (loopback, private ranges, link-local metadata services).
    """
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(hostname, None)
    except (socket.gaierror, UnicodeError):
        return False
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    return bool(addresses) and all(address.is_global for address in addresses)


class Webhooks:
    def __init__(
        self, pool: asyncpg.Pool, box: SecretBox, poster: WebhookPoster, *, allow_http: bool
    ) -> None:
        self._pool = pool
        self._box = box
        self._poster = poster
        self._allow_http = allow_http

    async def subscribe(self, partner: Partner, url: str, events: list[str]) -> dict[str, Any]:
        parts = urlsplit(url)
        schemes = ("https", "http") if self._allow_http else ("https",)
        if parts.scheme not in schemes or not parts.hostname or len(url) > 2000:
            raise invalid("url", f"must be an absolute {' or '.join(schemes)} URL")
        if not self._allow_http and not await reaches_only_public_addresses(parts.hostname):
            raise invalid("url", "must resolve to public addresses only")
        unknown = sorted(set(events) - set(EVENT_TYPES))
        if not events or unknown:
            raise invalid("events", f"choose among {', '.join(EVENT_TYPES)}")
        secret = "whsec_" + secrets.token_urlsafe(32)
        sealed = self._box.seal(secret, purpose=PURPOSE)
        row = await store.add_subscription(self._pool, partner.partner_id, url, events, sealed)
        # The secret is shown once, at creation; it is kept sealed for signing.
        return {**_subscription_json(row), "secret": secret}

    async def subscriptions(self, partner: Partner) -> list[dict[str, Any]]:
        rows = await store.subscriptions(self._pool, partner.partner_id)
        return [_subscription_json(row) for row in rows]

    async def unsubscribe(self, partner: Partner, subscription_id: uuid.UUID) -> None:
        if not await store.deactivate(self._pool, partner.partner_id, subscription_id):
            raise not_found("no such subscription for this partner")

    async def deliveries(self, partner: Partner, limit: int) -> list[dict[str, Any]]:
        rows = await store.deliveries(self._pool, partner.partner_id, limit)
        return [_delivery_json(row) for row in rows]

    async def replay(self, partner: Partner, delivery_id: uuid.UUID) -> dict[str, Any]:
        async with self._pool.acquire() as conn:
            if not await store.replay(conn, partner.partner_id, delivery_id):
                raise not_found("no such delivery for this partner")
        row = await store.delivery(self._pool, delivery_id)
        assert row is not None
        return _delivery_json(row)

    async def deliver(self, message: OutboxMessage) -> None:
        """The outbox relay's receiver: sign and post one delivery, log the attempt.

        Raising makes the relay retry with backoff; the log shows every attempt.
        """
        delivery_id = uuid.UUID(str(message.payload["delivery_id"]))
        row = await store.delivery(self._pool, delivery_id)
        if row is None:
            return
        target = await store.target(self._pool, row["subscription_id"])
        if target is None:
            return
        url, sealed, active = target
        if not active:
            await store.record_attempt(
                self._pool, delivery_id, status=None, error="subscription removed", delivered=False
            )
            return
        secret = self._box.open(sealed, purpose=PURPOSE)
        try:
            hostname = urlsplit(url).hostname or ""
            # Checked again at each delivery: a name may resolve elsewhere since.
            if not self._allow_http and not await reaches_only_public_addresses(hostname):
                raise DeliveryFailed(None, "the URL resolves to a non-public address")
            status = await self._poster.post(url, secret, str(delivery_id), row["payload"])
        except DeliveryFailed as failure:
            await store.record_attempt(
                self._pool, delivery_id, status=failure.status, error=str(failure), delivered=False
            )
            raise
        await store.record_attempt(self._pool, delivery_id, status=status, error="", delivered=True)
