"""Transactional outbox: announce a change exactly when it commits, deliver it at least once.

The writer calls ``enqueue`` inside the transaction that makes the change, so
the message exists if and only if the change does. ``OutboxRelay`` delivers
committed messages afterwards. Delivery is at least once (a relay can stop
after the receiver acted but before it recorded success), so receivers apply
each message inside their own transaction guarded by ``remember_once``, which
turns at-least-once into exactly-once in effect.

Delivered rows, and the receivers' ``processed_messages`` records, are kept for
a retention period (30 days by default) and then deleted in small batches by
every relay, so a stuffing flood that queues a row per failed sign-in for days
does not grow the table without end. Dead rows are never deleted: an operator
inspects and requeues them (within the retention, or a receiver that already
applied the message and forgot it would apply it again).

A message may carry a secret only its receiver needs (a sign-in code, a reset
link): ``enqueue(..., scrub=[("code", "secret")])`` blanks those fields once the
message is delivered or dead, so delivered rows do not keep credentials.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from services.runtime import jobs
from services.runtime.queue import (
    AttemptBatch,
    LeasedQueue,
    LeasedTable,
    RetryPolicy,
    backoff_seconds,
)

NOTIFY_CHANNEL = "mamoru_outbox"
# Payload field, reserved, holding the paths to blank once the message is delivered
# or dead. The outbox table has no column for it; receivers never see it.
SCRUB_FIELD = "$scrub_on_delivery"

_log = structlog.get_logger(__name__)

DEFAULT_RETENTION = timedelta(days=30)
# Rows deleted per statement: short statements that never hold many locks for long.
PURGE_BATCH = 5_000
PURGE_INTERVAL_SECONDS = 3_600.0

# Indexes on the times (runtime migration 0002) find the old rows without reading
# the table; SKIP LOCKED lets every replica's relay purge at once without waiting
# on another.
_PURGE_DELIVERED = """
delete from outbox where id in (
    select id from outbox
     where state = 'delivered' and delivered_at < now() - $1::interval
     limit $2 for update skip locked
)
"""
_PURGE_PROCESSED = """
delete from processed_messages where idempotency_key in (
    select idempotency_key from processed_messages
     where processed_at < now() - $1::interval
     limit $2 for update skip locked
)
"""


__all__ = [
    "NOTIFY_CHANNEL",
    "SCRUB_FIELD",
    "NotInTransactionError",
    "OutboxMessage",
    "OutboxRelay",
    "backoff_seconds",
    "enqueue",
    "remember_once",
    "scrubbed",
]


class NotInTransactionError(RuntimeError):
    """The call must share the caller's transaction, and there was none."""


@dataclasses.dataclass(frozen=True)
class OutboxMessage:
    """A message handed to the receiver; ``attempts`` counts this delivery too."""

    id: int
    topic: str
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


async def enqueue(
    conn: asyncpg.Connection,
    *,
    topic: str,
    idempotency_key: str,
    payload: dict[str, Any],
    scrub: Sequence[Sequence[str]] = (),
) -> None:
    """Store a message in the caller's transaction; the same key is stored once.

    Relays are woken by NOTIFY, which PostgreSQL sends only if the transaction
    commits, so a rolled-back change is never announced. ``scrub`` names payload
    fields (each a path of keys, e.g. ``("code", "secret")``) that are blanked once
    the message is delivered or dead.
    """
    _require_transaction(conn, "enqueue")
    if not topic:
        raise ValueError("topic must not be empty")
    if not idempotency_key:
        raise ValueError("idempotency_key must not be empty")
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    if SCRUB_FIELD in payload:
        raise ValueError(f"payload field {SCRUB_FIELD!r} is reserved")
    paths = [list(path) for path in scrub]
    if any(not path or not all(isinstance(key, str) and key for key in path) for path in paths):
        raise ValueError("each scrub path must be a non-empty sequence of field names")
    # Encoded here rather than by a pool codec, so any connection works and a
    # value json cannot represent fails in the caller, not in the relay.
    body = json.dumps({**payload, SCRUB_FIELD: paths} if paths else payload)
    await conn.execute(
        """
        with stored as (
            insert into outbox (topic, idempotency_key, payload)
            values ($1, $2, $3::text::jsonb)
            on conflict (idempotency_key) do nothing
            returning id
        )
        select pg_notify($4, '') from stored
        """,
        topic,
        idempotency_key,
        body,
        NOTIFY_CHANNEL,
    )


def scrubbed(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The payload as kept after delivery: the fields named at enqueue blanked, the
    reserved field gone; None when nothing is to be scrubbed."""
    paths = payload.get(SCRUB_FIELD)
    if not paths:
        return None
    kept = json.loads(json.dumps(payload))
    del kept[SCRUB_FIELD]
    for path in paths:
        if not isinstance(path, list) or not path:
            continue
        holder = kept
        for key in path[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and path[-1] in holder:
            holder[path[-1]] = ""
    result: dict[str, Any] = kept
    return result


def _scrubbed_text(payload: dict[str, Any]) -> str | None:
    kept = scrubbed(payload)
    return None if kept is None else json.dumps(kept)


async def remember_once(conn: asyncpg.Connection, idempotency_key: str) -> bool:
    """True the first time a receiver sees this key, False on every redelivery.

    Call it in the transaction that applies the message: if that transaction
    rolls back, the key is forgotten too and the next delivery applies it.
    """
    _require_transaction(conn, "remember_once")
    if not idempotency_key:
        raise ValueError("idempotency_key must not be empty")
    first = await conn.fetchval(
        "insert into processed_messages (idempotency_key) values ($1)"
        " on conflict (idempotency_key) do nothing returning true",
        idempotency_key,
    )
    return first is not None


OUTBOX = LeasedTable(
    name="outbox",
    columns="q.topic, q.idempotency_key, q.payload::text as payload, q.created_at",
    read=lambda row, _token: _message(row),
    done="delivered",
    done_set="delivered_at = now()",
    kept="payload",
)


def _message(row: asyncpg.Record) -> OutboxMessage:
    payload = json.loads(row["payload"])
    payload.pop(SCRUB_FIELD, None)
    return OutboxMessage(
        id=row["queue_key"],
        topic=row["topic"],
        idempotency_key=row["idempotency_key"],
        payload=payload,
        attempts=row["queue_attempts"],
        created_at=row["created_at"],
    )


def _kept_payload(text: str) -> str | None:
    if SCRUB_FIELD not in text:
        return None
    return _scrubbed_text(json.loads(text))


class OutboxRelay:
    """Delivers committed outbox rows; run several for availability.

    A ``LeasedQueue`` over the outbox table: rows are claimed with ``FOR UPDATE
    SKIP LOCKED`` and a lease, so relays never hold the same row, and a row whose
    relay died is claimed again once the lease ends. Delivery happens outside the
    claiming transaction. ``deliver`` takes one message at a time (each under the
    delivery timeout); ``deliver_batch`` takes every message of a claim at once
    and answers an outcome per message (None: delivered), for receivers that
    accept many messages in one call.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        deliver: Callable[[OutboxMessage], Awaitable[None]] | None = None,
        *,
        deliver_batch: AttemptBatch[OutboxMessage] | None = None,
        batch_size: int = 100,
        lease_seconds: float = 30.0,
        max_attempts: int = 10,
        base_backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 600.0,
        poll_interval_seconds: float = 2.0,
        delivery_timeout_seconds: float | None = None,
        retention: timedelta = DEFAULT_RETENTION,
        purge_interval_seconds: float = PURGE_INTERVAL_SECONDS,
    ) -> None:
        if retention <= timedelta(0):
            raise ValueError("retention must be positive")
        self._pool = pool
        self._retention = retention
        self._purge_interval = purge_interval_seconds
        self._queue = LeasedQueue(
            pool,
            OUTBOX,
            RetryPolicy(
                max_attempts=max_attempts,
                base_backoff_seconds=base_backoff_seconds,
                max_backoff_seconds=max_backoff_seconds,
                lease_seconds=lease_seconds,
                attempt_timeout_seconds=delivery_timeout_seconds,
            ),
            attempt=deliver,
            attempt_batch=deliver_batch,
            keep=_kept_payload,
            failed=_log_failure,
            batch_size=batch_size,
            poll_seconds=poll_interval_seconds,
            channel=NOTIFY_CHANNEL,
            event="outbox.relay_error",
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, woken by NOTIFY and polling as a fallback.

        The pool needs a spare connection: one is held for LISTEN (behind a
        transaction pooler, a direct connection instead). Losing the
        database is logged and retried, never fatal.
        """
        purging = jobs.every(
            self._purge_interval, self.purge, log=_log, event="outbox.purge_failed"
        )
        await asyncio.gather(self._queue.run(stop), purging(stop))

    async def purge(self) -> int:
        """Delete delivered rows and processed-message records older than the retention,
        a batch per statement; returns how many rows went."""
        deleted = 0
        for statement in (_PURGE_DELIVERED, _PURGE_PROCESSED):
            while True:
                status = await self._pool.execute(statement, self._retention, PURGE_BATCH)
                count = int(status.rsplit(" ", 1)[-1])
                deleted += count
                if count < PURGE_BATCH:
                    break
        if deleted:
            _log.info("outbox.purged", rows=deleted, retention_days=self._retention.days)
        return deleted

    async def deliver_due(self) -> int:
        """One pass: claim up to a batch of due rows and deliver them.

        Returns how many rows were attempted, delivered or not.
        """
        return await self._queue.deliver_due()


def _log_failure(message: OutboxMessage, error: str, dead: bool, delay: float) -> None:
    if dead:
        _log.error(
            "outbox.message_dead",
            message_id=message.id,
            topic=message.topic,
            attempts=message.attempts,
            error=error,
        )
    else:
        _log.warning(
            "outbox.delivery_failed",
            message_id=message.id,
            topic=message.topic,
            attempts=message.attempts,
            retry_in_seconds=round(delay, 3),
            error=error,
        )


def _require_transaction(conn: asyncpg.Connection, what: str) -> None:
    if not conn.is_in_transaction():
        raise NotInTransactionError(
            f"{what} must run inside the caller's transaction (async with conn.transaction()),"
            " so the message commits or rolls back with the change it belongs to"
        )
