"""Webhook subscriptions, the delivery log, replays, and delivering one outbox message."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import asyncpg
import httpx

from services.gateway.clients.webhooks import DeliveryFailed, only_public
from services.gateway.domain.errors import Refusal, invalid, not_found
from services.gateway.domain.partners import Partner
from services.gateway.domain.payments import EVENT_TYPES
from services.gateway.domain.sealing import SecretBox
from services.gateway.storage import webhooks as store
from services.gateway.use_cases.ports import AddressResolver, WebhookPoster
from services.runtime.outbox import OutboxMessage

PURPOSE = "webhook-secret"
RESOLVE_SECONDS = 5.0


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


def url_problem(url: str, *, allow_http: bool) -> str | None:
    """Why a webhook URL is not acceptable, or None.

    In production a delivery goes to https on port 443 only: a partner choosing
    the port could probe services that listen on others.
    """
    # Parsed as the sender parses it, so the check and the delivery see one host and port.
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL:
        parts = None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts is None or parts.scheme not in schemes or not parts.raw_host or len(url) > 2000:
        return f"must be an absolute {' or '.join(schemes)} URL"
    if not allow_http and parts.port not in (None, 443):
        return "must use port 443 (leave the port out)"
    return None


class Webhooks:
    def __init__(
        self,
        pool: asyncpg.Pool,
        box: SecretBox,
        poster: WebhookPoster,
        resolver: AddressResolver,
        *,
        allow_http: bool,
        max_subscriptions: int,
    ) -> None:
        self._pool = pool
        self._box = box
        self._poster = poster
        self._resolver = resolver
        self._allow_http = allow_http
        self._max_subscriptions = max_subscriptions

    async def subscribe(self, partner: Partner, url: str, events: list[str]) -> dict[str, Any]:
        problem = url_problem(url, allow_http=self._allow_http)
        if problem is not None:
            raise invalid("url", problem)
        if not self._allow_http:
            # A first look for the partner's sake; each delivery checks again.
            host = httpx.URL(url).raw_host.decode("ascii")
            try:
                addresses = await asyncio.wait_for(self._resolver.resolve(host), RESOLVE_SECONDS)
            except TimeoutError:
                addresses = []
            if not only_public(addresses):
                raise invalid("url", "must resolve to public addresses only")
        unknown = sorted(set(events) - set(EVENT_TYPES))
        if not events or unknown:
            raise invalid("events", f"choose among {', '.join(EVENT_TYPES)}")
        secret = "whsec_" + secrets.token_urlsafe(32)
        sealed = self._box.seal(secret, purpose=PURPOSE)
        row = await store.add_subscription(
            self._pool, partner.partner_id, url, events, sealed, limit=self._max_subscriptions
        )
        if row is None:
            raise Refusal(
                409,
                "TOO_MANY_SUBSCRIPTIONS",
                f"a partner holds at most {self._max_subscriptions} subscriptions;"
                " remove one first",
            )
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
            # Checked again at each delivery: the rules may be newer than the URL.
            if url_problem(url, allow_http=self._allow_http) is not None:
                raise DeliveryFailed(None, "the URL is no longer accepted; subscribe again")
            status = await self._poster.post(url, secret, str(delivery_id), row["payload"])
        except DeliveryFailed as failure:
            await store.record_attempt(
                self._pool, delivery_id, status=failure.status, error=str(failure), delivered=False
            )
            raise
        await store.record_attempt(self._pool, delivery_id, status=status, error="", delivered=True)
