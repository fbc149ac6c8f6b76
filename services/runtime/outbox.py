"""Transactional outbox: announce a change exactly when it commits, deliver it at least once.

The writer calls ``enqueue`` inside the transaction that makes the change, so
the message exists if and only if the change does. ``OutboxRelay`` delivers
committed messages afterwards. Delivery is at least once (a relay can stop
after the receiver acted but before it recorded success), so receivers apply
each message inside their own transaction guarded by ``remember_once``, which
turns at-least-once into exactly-once in effect.

A message may carry a secret only its receiver needs (a sign-in code, a reset
link): ``enqueue(..., scrub=[("code", "secret")])`` blanks those fields once the
message is delivered or dead, so delivered rows do not keep credentials.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from services.runtime.db import session_connection
from services.runtime.outages import OutageLog

NOTIFY_CHANNEL = "mamoru_outbox"
# Payload field, reserved, holding the paths to blank once the message is delivered
# or dead. The outbox table has no column for it; receivers never see it.
SCRUB_FIELD = "$scrub_on_delivery"
_ERROR_TEXT_LIMIT = 2000
# The shortest wait between passes, so rows another relay is claiming right
# now cannot make this one spin.
_MIN_WAIT_SECONDS = 0.05

_log = structlog.get_logger(__name__)


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


def backoff_seconds(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Delay before retrying after failed attempt number ``attempt`` (1-based).

    Exponential in the attempt, capped, with the upper half jittered so that
    messages failing together do not retry together.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 62))
    return ceiling / 2 + (rng or _jitter).uniform(0, ceiling / 2)


_jitter = random.Random()  # noqa: S311 - spreading retries needs no cryptographic randomness


class OutboxRelay:
    """Delivers committed outbox rows to ``deliver``; run several for availability.

    Each pass claims due rows with ``FOR UPDATE SKIP LOCKED`` and a lease, so
    relays never hold the same row, and a row whose relay died is claimed again
    once the lease ends. Delivery happens outside the claiming transaction.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        deliver: Callable[[OutboxMessage], Awaitable[None]],
        *,
        batch_size: int = 100,
        lease_seconds: float = 30.0,
        max_attempts: int = 10,
        base_backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 600.0,
        poll_interval_seconds: float = 2.0,
        delivery_timeout_seconds: float | None = None,
    ) -> None:
        delivery_timeout = (
            lease_seconds / 2 if delivery_timeout_seconds is None else delivery_timeout_seconds
        )
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < delivery_timeout < lease_seconds:
            # A delivery outliving its lease would let a second relay deliver
            # the same row at the same time.
            raise ValueError("delivery_timeout_seconds must be positive and below lease_seconds")
        if base_backoff_seconds <= 0 or max_backoff_seconds < base_backoff_seconds:
            raise ValueError("backoff must satisfy 0 < base_backoff_seconds <= max_backoff_seconds")
        if poll_interval_seconds <= 0:
            raise ValueError("poll_interval_seconds must be positive")
        self._pool = pool
        self._deliver = deliver
        self._batch_size = batch_size
        self._lease_seconds = lease_seconds
        self._max_attempts = max_attempts
        self._base_backoff = base_backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._poll_interval = poll_interval_seconds
        self._delivery_timeout = delivery_timeout

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, woken by NOTIFY and polling as a fallback.

        The pool needs a spare connection: one is held for LISTEN (behind a
        transaction pooler, a direct connection instead). Losing the
        database is logged and retried, never fatal.
        """
        outage = OutageLog(_log, "outbox.relay_error")
        while not stop.is_set():
            try:
                await self._run_listening(stop, listening=outage.ok)
            except Exception as error:
                # A relay that dies quietly stops every notification; keep going.
                outage.failed(error, retry_in_seconds=self._poll_interval)
                await _wait_for_any(stop, seconds=self._poll_interval)

    async def deliver_due(self) -> int:
        """One pass: claim up to a batch of due rows and deliver them.

        Returns how many rows were attempted, delivered or not.
        """
        token, claimed = await self._claim()
        if claimed:
            await asyncio.gather(
                *(self._deliver_one(token, message, kept) for message, kept in claimed)
            )
        return len(claimed)

    async def _run_listening(self, stop: asyncio.Event, listening: Callable[[], None]) -> None:
        wake = asyncio.Event()
        lost = asyncio.Event()

        def on_notify(*_: object) -> None:
            wake.set()

        def on_lost(_: object) -> None:
            lost.set()
            wake.set()

        async with session_connection(self._pool) as listener:
            listener.add_termination_listener(on_lost)
            await listener.add_listener(NOTIFY_CHANNEL, on_notify)
            listening()
            try:
                while not stop.is_set() and not lost.is_set():
                    wake.clear()
                    if await self.deliver_due() >= self._batch_size:
                        continue
                    # The listening connection is otherwise idle, so it also asks
                    # when the next retry falls due.
                    next_due = await self._seconds_until_next_due(listener)
                    await _wait_for_any(stop, wake, seconds=next_due)
            finally:
                listener.remove_termination_listener(on_lost)
                if not listener.is_closed():
                    await listener.remove_listener(NOTIFY_CHANNEL, on_notify)

    async def _claim(self) -> tuple[uuid.UUID, list[tuple[OutboxMessage, str | None]]]:
        """Claimed messages, each with its payload as kept after delivery (None: as is)."""
        token = uuid.uuid4()
        async with self._pool.acquire() as conn, conn.transaction():
            # A relay that stopped during the final attempt leaves a row whose
            # lease ends with no attempts left; it is dead, not retried forever.
            orphans = await conn.fetch(
                """
                update outbox
                set state = 'dead', lease_token = null,
                    last_error = 'the relay stopped during attempt ' || attempts
                        || ' and no attempts are left'
                where state = 'pending' and available_at <= now() and attempts >= $1
                returning id, payload::text as payload
                """,
                self._max_attempts,
            )
            kept_orphans = [
                (orphan["id"], kept)
                for orphan in orphans
                if (kept := _scrubbed_text(json.loads(orphan["payload"]))) is not None
            ]
            if kept_orphans:
                await conn.executemany(
                    "update outbox set payload = $2::text::jsonb where id = $1", kept_orphans
                )
            rows = await conn.fetch(
                """
                with due as (
                    select id from outbox
                    where state = 'pending' and available_at <= now() and attempts < $1
                    order by available_at, id
                    limit $2
                    for update skip locked
                )
                update outbox
                set attempts = outbox.attempts + 1,
                    available_at = now() + make_interval(secs => $3),
                    lease_token = $4
                from due
                where outbox.id = due.id
                returning outbox.id, outbox.topic, outbox.idempotency_key,
                          outbox.payload::text as payload, outbox.attempts, outbox.created_at
                """,
                self._max_attempts,
                self._batch_size,
                self._lease_seconds,
                token,
            )
        claimed = []
        for row in rows:
            payload = json.loads(row["payload"])
            kept = _scrubbed_text(payload)
            payload.pop(SCRUB_FIELD, None)
            message = OutboxMessage(
                id=row["id"],
                topic=row["topic"],
                idempotency_key=row["idempotency_key"],
                payload=payload,
                attempts=row["attempts"],
                created_at=row["created_at"],
            )
            claimed.append((message, kept))
        claimed.sort(key=lambda pair: pair[0].id)
        return token, claimed

    async def _deliver_one(
        self, token: uuid.UUID, message: OutboxMessage, kept_payload: str | None
    ) -> None:
        try:
            async with asyncio.timeout(self._delivery_timeout):
                await self._deliver(message)
        except TimeoutError:
            await self._record_failure(
                token,
                message,
                f"delivery timed out after {self._delivery_timeout:g} seconds",
                kept_payload,
            )
        except Exception as error:
            # Whatever the receiver raised, the row is retried, not lost.
            await self._record_failure(
                token, message, f"{type(error).__name__}: {error}", kept_payload
            )
        else:
            await self._record_delivery(message, kept_payload)

    async def _record_delivery(self, message: OutboxMessage, kept_payload: str | None) -> None:
        try:
            # Any holder may record success: a late success is still a success.
            await self._pool.execute(
                "update outbox set state = 'delivered', delivered_at = now(), lease_token = null,"
                " payload = coalesce($2::text::jsonb, payload)"
                " where id = $1 and state <> 'delivered'",
                message.id,
                kept_payload,
            )
        except Exception:
            # The lease will end and the row be delivered again; receivers deduplicate.
            _log.exception("outbox.record_delivery_failed", message_id=message.id)

    async def _record_failure(
        self, token: uuid.UUID, message: OutboxMessage, error: str, kept_payload: str | None
    ) -> None:
        error = error[:_ERROR_TEXT_LIMIT]
        dead = message.attempts >= self._max_attempts
        delay = backoff_seconds(message.attempts, base=self._base_backoff, cap=self._max_backoff)
        try:
            # Only the lease holder records a failure, so a relay whose lease ran
            # out cannot reschedule a row that another relay now holds.
            await self._pool.execute(
                """
                update outbox
                set state = case when $3 then 'dead' else 'pending' end,
                    available_at = case when $3 then available_at
                                        else now() + make_interval(secs => $4) end,
                    last_error = $5,
                    lease_token = null,
                    payload = case when $3 then coalesce($6::text::jsonb, payload)
                                   else payload end
                where id = $1 and lease_token = $2 and state = 'pending'
                """,
                message.id,
                token,
                dead,
                delay,
                error,
                kept_payload,
            )
        except Exception:
            _log.exception("outbox.record_failure_failed", message_id=message.id)
            return
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

    async def _seconds_until_next_due(self, conn: asyncpg.Connection) -> float:
        wait = await conn.fetchval(
            "select extract(epoch from min(available_at) - now())::float8"
            " from outbox where state = 'pending'"
        )
        if wait is None:
            return self._poll_interval
        return float(min(max(wait, _MIN_WAIT_SECONDS), self._poll_interval))


async def _wait_for_any(*events: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _require_transaction(conn: asyncpg.Connection, what: str) -> None:
    if not conn.is_in_transaction():
        raise NotInTransactionError(
            f"{what} must run inside the caller's transaction (async with conn.transaction()),"
            " so the message commits or rolls back with the change it belongs to"
        )
