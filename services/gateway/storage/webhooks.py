"""Webhook subscriptions and the delivery log. SQL only; deliveries leave via the outbox."""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

import asyncpg
from google.protobuf.struct_pb2 import Struct

from services.runtime.topics import Topic

# The payload names the delivery only: {"delivery_id": ...}.
TOPIC = Topic("webhook", Struct)
_SUBSCRIPTION = "subscription_id, partner_id, url, events, active, created_at"
_DELIVERY = (
    "delivery_id, subscription_id, event_id, event_type, state, attempts, last_status,"
    " last_error, created_at, last_attempt_at, delivered_at"
)

Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


async def add_subscription(
    pool: asyncpg.Pool,
    partner_id: uuid.UUID,
    url: str,
    events: list[str],
    sealed_secret: bytes,
    *,
    limit: int,
) -> dict[str, Any] | None:
    """The new subscription, or None when the partner already holds ``limit`` active ones."""
    async with pool.acquire() as conn, conn.transaction():
        # The partner's row is the lock, so racing requests cannot both take the last place.
        await conn.execute("select 1 from partners where partner_id = $1 for update", partner_id)
        held = await conn.fetchval(
            "select count(*) from webhook_subscriptions where partner_id = $1 and active",
            partner_id,
        )
        if held >= limit:
            return None
        row = await conn.fetchrow(
            "insert into webhook_subscriptions (subscription_id, partner_id, url, events,"  # noqa: S608
            f" sealed_secret) values ($1, $2, $3, $4, $5) returning {_SUBSCRIPTION}",
            uuid.uuid4(),
            partner_id,
            url,
            sorted(events),
            sealed_secret,
        )
    assert row is not None
    return dict(row)


async def subscriptions(db: Db, partner_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"select {_SUBSCRIPTION} from webhook_subscriptions"  # noqa: S608
        " where partner_id = $1 and active order by created_at, subscription_id",
        partner_id,
    )
    return [dict(row) for row in rows]


async def deactivate(db: Db, partner_id: uuid.UUID, subscription_id: uuid.UUID) -> bool:
    result = await db.execute(
        "update webhook_subscriptions set active = false"
        " where partner_id = $1 and subscription_id = $2 and active",
        partner_id,
        subscription_id,
    )
    return str(result).endswith(" 1")


async def target(db: Db, subscription_id: uuid.UUID) -> tuple[str, bytes, bool] | None:
    """(URL, sealed secret, still active) of a subscription."""
    row = await db.fetchrow(
        "select url, sealed_secret, active from webhook_subscriptions where subscription_id = $1",
        subscription_id,
    )
    return None if row is None else (row["url"], bytes(row["sealed_secret"]), row["active"])


async def emit(
    conn: asyncpg.Connection, partner_id: uuid.UUID, event_type: str, data: dict[str, Any]
) -> None:
    """In the caller's transaction: one delivery (and outbox message) per subscription."""
    subscribed = await conn.fetch(
        "select subscription_id from webhook_subscriptions"
        " where partner_id = $1 and active and $2 = any(events)",
        partner_id,
        event_type,
    )
    event_id = uuid.uuid4()
    for row in subscribed:
        delivery_id = uuid.uuid4()
        payload = {"id": str(event_id), "type": event_type, "data": data}
        await conn.execute(
            "insert into webhook_deliveries (delivery_id, subscription_id, partner_id,"
            " event_id, event_type, payload) values ($1, $2, $3, $4, $5, $6)",
            delivery_id,
            row["subscription_id"],
            partner_id,
            event_id,
            event_type,
            payload,
        )
        await TOPIC.enqueue(
            conn, _delivery_ref(delivery_id), idempotency_key=f"webhook:{delivery_id}:0"
        )


async def replay(conn: asyncpg.Connection, partner_id: uuid.UUID, delivery_id: uuid.UUID) -> bool:
    """Send a delivery again (as a new outbox message); False when it is not the partner's."""
    async with conn.transaction():
        replays = await conn.fetchval(
            "update webhook_deliveries set state = 'pending'"
            " where partner_id = $1 and delivery_id = $2 returning attempts",
            partner_id,
            delivery_id,
        )
        if replays is None:
            return False
        await TOPIC.enqueue(
            conn,
            _delivery_ref(delivery_id),
            idempotency_key=f"webhook:{delivery_id}:{uuid.uuid4()}",
        )
    return True


async def delivery(db: Db, delivery_id: uuid.UUID) -> dict[str, Any] | None:
    row = await db.fetchrow(
        f"select {_DELIVERY}, payload, partner_id from webhook_deliveries"  # noqa: S608
        " where delivery_id = $1",
        delivery_id,
    )
    return None if row is None else dict(row)


async def deliveries(db: Db, partner_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"select {_DELIVERY} from webhook_deliveries where partner_id = $1"  # noqa: S608
        " order by created_at desc, delivery_id limit $2",
        partner_id,
        limit,
    )
    return [dict(row) for row in rows]


async def record_attempt(
    db: Db, delivery_id: uuid.UUID, *, status: int | None, error: str, delivered: bool
) -> None:
    await db.execute(
        "update webhook_deliveries set attempts = attempts + 1, last_status = $2,"
        " last_error = $3, last_attempt_at = now(),"
        " state = case when $4 then 'delivered' else 'failed' end,"
        " delivered_at = case when $4 then now() else delivered_at end"
        " where delivery_id = $1",
        delivery_id,
        status,
        error[:500],
        delivered,
    )


def _delivery_ref(delivery_id: uuid.UUID) -> Struct:
    ref = Struct()
    ref.update({"delivery_id": str(delivery_id)})
    return ref
