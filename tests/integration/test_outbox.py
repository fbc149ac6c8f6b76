from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from services.runtime import outbox as outbox_module
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import RUNTIME_COMPONENT, RUNTIME_MIGRATIONS, apply_migrations
from services.runtime.outbox import (
    SCRUB_FIELD,
    NotInTransactionError,
    OutboxMessage,
    OutboxRelay,
    backoff_seconds,
    enqueue,
    remember_once,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
RELAY_PROCESS = Path(__file__).with_name("outbox_relay_process.py")


async def migrated_pool(url: str):
    pool = await create_pool(url, max_size=4)
    async with pool.acquire() as conn:
        await apply_migrations(conn, RUNTIME_COMPONENT, RUNTIME_MIGRATIONS)
    return pool


@pytest_asyncio.fixture
async def sender_url(new_database):
    return await new_database("outbox")


@pytest_asyncio.fixture
async def pool(sender_url):
    pool = await migrated_pool(sender_url)
    yield pool
    await close_pool(pool)


async def announce(
    pool, key: str, payload: dict[str, object] | None = None, topic: str = "notify.send"
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, topic=topic, idempotency_key=key, payload=payload or {"key": key})


class Receiver:
    """Records what it is given; fails while ``failing`` is set."""

    def __init__(self, failing: bool = False) -> None:
        self.received: list[OutboxMessage] = []
        self.failing = failing
        self.arrived = asyncio.Event()

    async def __call__(self, message: OutboxMessage) -> None:
        self.received.append(message)
        self.arrived.set()
        if self.failing:
            raise ConnectionError("notify is unreachable")


async def row(pool, key: str):
    return await pool.fetchrow(
        "select state, attempts, last_error, lease_token,"
        " extract(epoch from available_at - now())::float8 as due_in"
        " from outbox where idempotency_key = $1",
        key,
    )


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 60) -> None:
    """Wait for database state no event announces, failing after a generous bound."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def make_due(pool) -> None:
    # Moves retry times instead of sleeping through them.
    await pool.execute("update outbox set available_at = now() where state = 'pending'")


async def test_enqueue_refuses_a_connection_outside_a_transaction(pool):
    async with pool.acquire() as conn:
        with pytest.raises(NotInTransactionError, match="inside the caller's transaction"):
            await enqueue(conn, topic="notify.send", idempotency_key="k1", payload={})
    assert await pool.fetchval("select count(*) from outbox") == 0


async def test_the_same_idempotency_key_is_stored_once(pool):
    await announce(pool, "reset:42", {"first": True})
    await announce(pool, "reset:42", {"first": False})

    rows = await pool.fetch("select payload from outbox")
    assert [r["payload"] for r in rows] == [{"first": True}]


async def test_a_message_from_a_rolled_back_transaction_is_never_delivered(pool):
    receiver = Receiver()
    relay = OutboxRelay(pool, receiver)

    with pytest.raises(RuntimeError, match="limit exceeded"):
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, topic="notify.send", idempotency_key="rolled-back", payload={})
            raise RuntimeError("limit exceeded")
    await announce(pool, "committed")

    assert await relay.deliver_due() == 1
    assert await relay.deliver_due() == 0
    assert [m.idempotency_key for m in receiver.received] == ["committed"]
    assert (
        await pool.fetchval("select count(*) from outbox where idempotency_key = 'rolled-back'")
        == 0
    )


async def test_a_delivered_message_carries_its_payload_and_is_marked_delivered(pool):
    receiver = Receiver()
    await announce(pool, "top-up:7", {"amount": 5000, "currency": "JPY"}, topic="wallet.topped_up")

    await OutboxRelay(pool, receiver).deliver_due()

    (message,) = receiver.received
    assert (message.topic, message.payload, message.attempts) == (
        "wallet.topped_up",
        {"amount": 5000, "currency": "JPY"},
        1,
    )
    stored = await row(pool, "top-up:7")
    assert (stored["state"], stored["lease_token"]) == ("delivered", None)


async def test_a_failing_receiver_is_retried_with_growing_backoff_and_ends_dead(pool):
    receiver = Receiver(failing=True)
    relay = OutboxRelay(
        pool, receiver, max_attempts=3, base_backoff_seconds=100, max_backoff_seconds=10_000
    )
    await announce(pool, "reset:1")

    assert await relay.deliver_due() == 1
    first = await row(pool, "reset:1")
    assert (first["state"], first["attempts"]) == ("pending", 1)
    assert first["last_error"] == "ConnectionError: notify is unreachable"
    assert 50 - 5 <= first["due_in"] <= 100
    assert await relay.deliver_due() == 0, "retried before its backoff ran out"

    await make_due(pool)
    assert await relay.deliver_due() == 1
    second = await row(pool, "reset:1")
    assert (second["state"], second["attempts"]) == ("pending", 2)
    assert 100 - 5 <= second["due_in"] <= 200

    await make_due(pool)
    assert await relay.deliver_due() == 1
    last = await row(pool, "reset:1")
    assert (last["state"], last["attempts"]) == ("dead", 3)
    assert last["last_error"] == "ConnectionError: notify is unreachable"

    await make_due(pool)
    assert await relay.deliver_due() == 0
    assert len(receiver.received) == 3


async def test_a_batch_receiver_gets_every_due_message_of_a_claim_in_one_call(pool):
    calls: list[list[str]] = []

    async def deliver_batch(messages):
        calls.append([m.idempotency_key for m in messages])
        return [ConnectionError("refused") if m.payload.get("refuse") else None for m in messages]

    for n in range(4):
        await announce(pool, f"batch:{n}", {"refuse": n == 2})
    relay = OutboxRelay(pool, deliver_batch=deliver_batch, batch_size=10)

    assert await relay.deliver_due() == 4

    assert calls == [[f"batch:{n}" for n in range(4)]]
    states = [(await row(pool, f"batch:{n}"))["state"] for n in range(4)]
    assert states == ["delivered", "delivered", "pending", "delivered"]
    assert (await row(pool, "batch:2"))["last_error"] == "ConnectionError: refused"


async def test_a_receiver_that_recovers_gets_the_message_on_the_retry(pool):
    receiver = Receiver(failing=True)
    relay = OutboxRelay(pool, receiver, base_backoff_seconds=60)
    await announce(pool, "reset:2")
    await relay.deliver_due()

    receiver.failing = False
    await make_due(pool)
    await relay.deliver_due()

    assert [m.attempts for m in receiver.received] == [1, 2]
    assert (await row(pool, "reset:2"))["state"] == "delivered"


async def test_a_delivery_that_outlives_its_timeout_counts_as_a_failure(pool):
    async def hangs(message: OutboxMessage) -> None:
        await asyncio.Event().wait()

    relay = OutboxRelay(pool, hangs, lease_seconds=30, delivery_timeout_seconds=0.2)
    await announce(pool, "slow")

    await relay.deliver_due()

    stored = await row(pool, "slow")
    assert (stored["state"], stored["attempts"]) == ("pending", 1)
    assert stored["last_error"] == "delivery timed out after 0.2 seconds"


async def test_a_row_whose_last_attempt_died_with_its_relay_ends_dead(pool):
    receiver = Receiver()
    await announce(pool, "orphan")
    # What a relay killed during its final attempt leaves: no attempts left, lease over.
    await pool.execute("update outbox set attempts = 3, available_at = now()")

    assert await OutboxRelay(pool, receiver, max_attempts=3).deliver_due() == 0

    stored = await row(pool, "orphan")
    assert stored["state"] == "dead"
    assert "relay stopped during attempt 3" in stored["last_error"]
    assert receiver.received == []


async def test_relays_running_together_never_deliver_the_same_row_twice(pool):
    deliveries: collections.Counter[int] = collections.Counter()

    async def slow_receiver(message: OutboxMessage) -> None:
        deliveries[message.id] += 1
        await asyncio.sleep(0.01)

    async with pool.acquire() as conn, conn.transaction():
        for n in range(60):
            await enqueue(conn, topic="notify.send", idempotency_key=f"bulk:{n}", payload={})
    relays = [OutboxRelay(pool, slow_receiver, batch_size=7) for _ in range(3)]

    async def drain(relay: OutboxRelay) -> None:
        while await relay.deliver_due():
            pass

    await asyncio.gather(*(drain(relay) for relay in relays))

    assert len(deliveries) == 60
    assert set(deliveries.values()) == {1}
    assert await pool.fetchval("select count(*) from outbox where state <> 'delivered'") == 0


async def relay_is_waiting(pool) -> bool:
    """The relay found nothing due and is waiting: its last query asked when to look again.

    It asks on its listening connection, which runs nothing else, right before it waits.
    """
    return bool(
        await pool.fetchval(
            "select exists (select from pg_stat_activity"
            " where datname = current_database() and application_name = 'relay-under-test'"
            " and state = 'idle' and query like '%min(available_at)%')"
        )
    )


async def test_a_running_relay_is_woken_by_a_commit_rather_than_its_poll(pool, sender_url):
    receiver = Receiver()
    relay_pool = await create_pool(sender_url, max_size=3, application_name="relay-under-test")
    # A poll interval far beyond the wait below: only NOTIFY can explain a delivery.
    relay = OutboxRelay(relay_pool, receiver, poll_interval_seconds=600)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        await eventually(lambda: relay_is_waiting(pool))

        await announce(pool, "while-waiting")
        async with asyncio.timeout(20):
            await receiver.arrived.wait()
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await running
        await close_pool(relay_pool)
    assert [m.idempotency_key for m in receiver.received] == ["while-waiting"]


SECRET_BEARING = {"account_id": "a-1", "code": {"secret": "reset-link-token", "expires_at": "soon"}}


async def announce_secret(pool, key: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(
            conn,
            topic="notify.send",
            idempotency_key=key,
            payload=SECRET_BEARING,
            scrub=[("code", "secret")],
        )


async def stored_payload(pool, key: str) -> str:
    text: str = await pool.fetchval(
        "select payload::text from outbox where idempotency_key = $1", key
    )
    return text


async def test_a_secret_reaches_the_receiver_and_is_blanked_once_delivered(pool):
    receiver = Receiver()
    await announce_secret(pool, "code:1")
    assert "reset-link-token" in await stored_payload(pool, "code:1")

    await OutboxRelay(pool, receiver).deliver_due()

    (message,) = receiver.received
    assert message.payload == SECRET_BEARING
    stored = await pool.fetchval("select payload from outbox where idempotency_key = 'code:1'")
    assert stored == {"account_id": "a-1", "code": {"secret": "", "expires_at": "soon"}}


async def test_a_secret_is_blanked_when_its_message_ends_dead_either_way(pool):
    await announce_secret(pool, "code:dead")
    await OutboxRelay(pool, Receiver(failing=True), max_attempts=1).deliver_due()
    await announce_secret(pool, "code:orphan")
    # What a relay killed during its final attempt leaves: no attempts left, lease over.
    await pool.execute(
        "update outbox set attempts = 3, available_at = now() where idempotency_key = 'code:orphan'"
    )
    await OutboxRelay(pool, Receiver(), max_attempts=3).deliver_due()

    for key in ("code:dead", "code:orphan"):
        assert (await row(pool, key))["state"] == "dead"
        assert "reset-link-token" not in await stored_payload(pool, key)


async def test_a_payload_may_not_use_the_reserved_scrub_field(pool):
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(ValueError, match="reserved"):
            await enqueue(
                conn, topic="t", idempotency_key="k", payload={SCRUB_FIELD: []}, scrub=[("a",)]
            )
        with pytest.raises(ValueError, match="path"):
            await enqueue(conn, topic="t", idempotency_key="k", payload={}, scrub=[()])


async def test_remember_once_is_true_the_first_time_only(pool):
    async with pool.acquire() as conn:
        async with conn.transaction():
            assert await remember_once(conn, "reset:9") is True
        async with conn.transaction():
            assert await remember_once(conn, "reset:9") is False


async def test_remember_once_forgets_a_key_whose_transaction_rolled_back(pool):
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                assert await remember_once(conn, "reset:10") is True
                raise RuntimeError("applying the message failed")
        async with conn.transaction():
            assert await remember_once(conn, "reset:10") is True


async def test_remember_once_refuses_a_connection_outside_a_transaction(pool):
    async with pool.acquire() as conn:
        with pytest.raises(NotInTransactionError):
            await remember_once(conn, "reset:11")


async def test_delivered_rows_and_processed_records_past_the_retention_are_purged_and_nothing_else(
    pool,
):
    for key in ("old-delivered", "new-delivered", "old-pending", "old-dead"):
        await announce(pool, key)
    await pool.execute(
        "update outbox set state = 'delivered', delivered_at = now() - interval '31 days'"
        " where idempotency_key = 'old-delivered'"
    )
    await pool.execute(
        "update outbox set state = 'delivered', delivered_at = now()"
        " where idempotency_key = 'new-delivered'"
    )
    await pool.execute(
        "update outbox set state = 'dead', created_at = now() - interval '60 days'"
        " where idempotency_key = 'old-dead'"
    )
    await pool.execute(
        "update outbox set created_at = now() - interval '60 days'"
        " where idempotency_key = 'old-pending'"
    )
    async with pool.acquire() as conn, conn.transaction():
        await remember_once(conn, "applied-long-ago")
        await remember_once(conn, "applied-today")
    await pool.execute(
        "update processed_messages set processed_at = now() - interval '31 days'"
        " where idempotency_key = 'applied-long-ago'"
    )

    deleted = await OutboxRelay(pool, Receiver(), retention=timedelta(days=30)).purge()

    assert deleted == 2
    kept = {r["idempotency_key"] for r in await pool.fetch("select idempotency_key from outbox")}
    assert kept == {"new-delivered", "old-pending", "old-dead"}
    remembered = await pool.fetch("select idempotency_key from processed_messages")
    assert [r["idempotency_key"] for r in remembered] == ["applied-today"]


async def test_the_purge_finds_rows_past_the_retention_without_reading_the_whole_table(pool):
    # The planner reads a table this small whole however it is indexed; with the
    # sequential scan priced out, the plan shows which index can answer the purge.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("set local enable_seqscan = off")
        plans = [
            "\n".join(
                row[0] for row in await conn.fetch("explain " + statement, timedelta(days=30), 5000)
            )
            for statement in (outbox_module._PURGE_DELIVERED, outbox_module._PURGE_PROCESSED)
        ]
    assert "outbox_delivered_at" in plans[0]
    assert "processed_messages_at" in plans[1]


def test_a_relay_refuses_a_retention_that_is_not_positive(pool):
    with pytest.raises(ValueError, match="retention"):
        OutboxRelay(pool, Receiver(), retention=timedelta(0))


def test_backoff_doubles_per_attempt_within_jitter_and_stops_at_the_cap():
    for attempt, low, high in [(1, 0.5, 1), (2, 1, 2), (3, 2, 4), (9, 128, 256), (30, 150, 300)]:
        for _ in range(50):
            assert low <= backoff_seconds(attempt, base=1, cap=300) <= high
    assert backoff_seconds(10_000, base=1, cap=300) <= 300


def test_a_delivery_timeout_as_long_as_the_lease_is_refused():
    with pytest.raises(ValueError, match="below lease_seconds"):
        OutboxRelay(object(), Receiver(), lease_seconds=5, delivery_timeout_seconds=5)


class BalanceReceiver:
    """A real HTTP receiver with its own database that credits a balance once per key.

    It applies the first delivery, then holds the response until ``release`` is
    set, so the relay can be killed after the effect but before it learns of it.
    """

    def __init__(self, pool) -> None:
        self.pool = pool
        self.deliveries: list[str] = []
        self.first_applied = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        async with self.pool.acquire() as conn, conn.transaction():
            if await remember_once(conn, body["idempotency_key"]):
                await conn.execute(
                    "update balances set amount = amount + $1 where account = $2",
                    body["payload"]["amount"],
                    body["payload"]["account"],
                )
        self.deliveries.append(body["idempotency_key"])
        if len(self.deliveries) == 1:
            self.first_applied.set()
            await self.release.wait()
        return web.json_response({"applied": True})


async def start_relay_process(database_url: str, receiver_url: str, lease: float):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable, str(RELAY_PROCESS), database_url, receiver_url, str(lease), env=env
    )


async def is_delivered(pool, key: str) -> bool:
    return bool((await row(pool, key))["state"] == "delivered")


@pytest.mark.slow
async def test_a_message_is_applied_exactly_once_even_if_its_relay_is_killed_mid_delivery(
    pool, sender_url, new_database
):
    receiver_pool = await migrated_pool(await new_database("receiver"))
    await receiver_pool.execute(
        "create table balances (account text primary key, amount bigint not null);"
        "insert into balances values ('acct-1', 0);"
    )
    receiver = BalanceReceiver(receiver_pool)
    app = web.Application()
    app.router.add_post("/messages", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver_url = f"http://{host}:{port}/messages"
    lease = 3.0
    processes = []
    try:
        await announce(pool, "top-up:1", {"account": "acct-1", "amount": 500})

        first = await start_relay_process(sender_url, receiver_url, lease)
        processes.append(first)
        async with asyncio.timeout(60):
            await receiver.first_applied.wait()
        first.send_signal(signal.SIGKILL)
        await first.wait()
        receiver.release.set()

        # The premise: the relay died holding the lease, without recording anything.
        killed = await row(pool, "top-up:1")
        assert (killed["state"], killed["attempts"], killed["last_error"]) == ("pending", 1, None)
        assert killed["lease_token"] is not None

        second = await start_relay_process(sender_url, receiver_url, lease)
        processes.append(second)
        await eventually(lambda: is_delivered(pool, "top-up:1"))
        second.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await second.wait() == 0

        assert receiver.deliveries == ["top-up:1", "top-up:1"]
        assert (await row(pool, "top-up:1"))["attempts"] == 2
        assert await receiver_pool.fetchval("select amount from balances") == 500
        assert await receiver_pool.fetchval("select count(*) from processed_messages") == 1
    finally:
        receiver.release.set()
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await runner.cleanup()
        await close_pool(receiver_pool)
