"""A known identifier costs Login and RequestPasswordReset the same database work on the
response path as an unknown one, so their answers cannot be told apart by timing.

The statements each call sends are counted with asyncpg's query logger on identity's
only connection; risk is away (nothing listens at its address), which is identity's
documented fallback and lets the attempt through to the password check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest_asyncio
from mamoru.common.v1 import common_pb2

from services.devstack.stack import free_port
from services.identity.bootstrap import MIGRATIONS
from services.identity.clients.hashing import HashBudget, PasswordHasher
from services.identity.clients.notices import outbox_router
from services.identity.clients.risk import RiskClient
from services.identity.domain.sealing import Pseudonyms, SecretBox
from services.identity.settings import IdentitySettings
from services.identity.storage.sign_in import PgSignInStore
from services.identity.use_cases import Identity
from services.identity.use_cases.keys import KeyRing
from services.runtime.config import load_settings
from services.runtime.db import close_pool, create_pool
from services.runtime.errors import Unauthenticated
from services.runtime.migrations import migrate
from services.runtime.outbox import OutboxRelay

PASSWORD = "the owner's long passphrase"
CLIENT = common_pb2.ClientContext(ip_address="192.0.2.7", device_id="laptop", user_agent="ua")


@dataclass
class Bench:
    identity: Identity
    pool: asyncpg.Pool
    statements: list[str]
    nowhere: grpc.aio.Channel
    # A new process's Identity over the same database, as after a restart.
    restart: Callable[[], Identity]

    async def statements_of(self, call: Awaitable[Any]) -> list[str]:
        """The statements sent while ``call`` ran, in order."""
        await asyncio.sleep(0)
        self.statements.clear()
        with contextlib.suppress(Unauthenticated):
            await call
        # The query logger reports on the next turn of the event loop.
        await asyncio.sleep(0)
        return list(self.statements)

    async def deliver_outbox(self, identity: Identity | None = None) -> None:
        """Run identity's own outbox topics now, as its relay does after each answer."""
        identity = identity or self.identity
        router = outbox_router(
            self.nowhere,
            self.nowhere,
            reset_request=identity.process_reset_request,
            failed_sign_in=identity.process_failed_sign_in,
        )
        await OutboxRelay(self.pool, router).deliver_due()


@pytest_asyncio.fixture
async def bench(new_database) -> AsyncIterator[Bench]:
    url = await new_database("identity")
    pool = await create_pool(url, max_size=1)
    statements: list[str] = []
    async with pool.acquire() as conn:
        await migrate(conn, "identity", MIGRATIONS)
        conn.add_query_logger(lambda record: statements.append(record.query))
    settings = load_settings(
        IdentitySettings,
        {"DATABASE_URL": url, "IDENTITY_SECRETS_KEY": base64.b64encode(bytes(32)).decode()},
    )
    box = SecretBox(settings.sealing_key())
    keys = KeyRing(pool, box, rotate_every=timedelta(days=30))
    await keys.start()
    nowhere = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")
    risk = RiskClient(nowhere, timeout_seconds=1)

    def start_identity() -> Identity:
        return Identity(
            pool=pool,
            settings=settings,
            keys=keys,
            risk=risk,
            hasher=PasswordHasher(
                HashBudget(settings.hash_slot_plan(), queue=8, new_wait=30, known_wait=30)
            ),
            box=box,
            pseudonyms=Pseudonyms(bytes(32)),
            sign_in_store=PgSignInStore(pool),
        )

    try:
        yield Bench(start_identity(), pool, statements, nowhere, start_identity)
    finally:
        await risk.drain()
        await nowhere.close()
        await close_pool(pool)


async def an_account(bench: Bench, email: str) -> uuid.UUID:
    account_id = uuid.uuid4()
    password_hash = await bench.identity.hasher.hash(PASSWORD)
    async with bench.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "insert into accounts (id, status, payer_id, password_hash, registration_device_id)"
            " values ($1, 'active', $2, $3, 'phone-1')",
            account_id,
            uuid.uuid4(),
            password_hash,
        )
        await conn.execute(
            "insert into contacts (id, account_id, kind, address, address_key, verified,"
            " is_primary, login_key, verified_at) values ($1, $2, 1, $3, $3, true, true, $3,"
            " now())",
            uuid.uuid4(),
            account_id,
            email,
        )
    return account_id


async def test_a_wrong_password_costs_the_response_the_same_statements_for_any_identifier(
    bench: Bench,
):
    account_id = await an_account(bench, "hanako@example.jp")

    def wrong_password(identifier: str) -> Awaitable[Any]:
        return bench.identity.login(identifier=identifier, password="guess", client=CLIENT)

    known = await bench.statements_of(wrong_password("hanako@example.jp"))
    unknown = await bench.statements_of(wrong_password("nobody@example.jp"))

    assert known == unknown
    # The failure is still recorded, after the answer, by identity's outbox relay.
    await bench.deliver_outbox()
    assert (
        await bench.pool.fetchval("select recent_failures from accounts where id = $1", account_id)
        == 1
    )
    assert (
        await bench.pool.fetchval(
            "select count(*) from security_events where kind = 'login.password_failed'"
        )
        == 1
    )


async def test_a_reset_request_costs_the_response_the_same_statements_for_any_identifier(
    bench: Bench,
):
    account_id = await an_account(bench, "hanako@example.jp")

    def reset(identifier: str) -> Awaitable[None]:
        return bench.identity.request_password_reset(identifier=identifier, client=CLIENT)

    known = await bench.statements_of(reset("hanako@example.jp"))
    unknown = await bench.statements_of(reset("nobody@example.jp"))

    assert known == unknown
    # The link is made afterwards, by identity's outbox relay, for the real account only.
    await bench.deliver_outbox()
    assert await bench.pool.fetchval("select count(*) from password_resets") == 1
    assert await bench.pool.fetchval("select account_id from password_resets") == account_id


async def test_a_failed_sign_in_answered_just_before_a_restart_is_still_counted(bench: Bench):
    account_id = await an_account(bench, "hanako@example.jp")
    with contextlib.suppress(Unauthenticated):
        await bench.identity.login(identifier="hanako@example.jp", password="guess", client=CLIENT)

    # The process that answered is gone before doing anything after the answer; the
    # next one finds the attempt waiting and counts it.
    await bench.deliver_outbox(bench.restart())

    assert (
        await bench.pool.fetchval("select recent_failures from accounts where id = $1", account_id)
        == 1
    )
    assert (
        await bench.pool.fetchval(
            "select count(*) from security_events where account_id = $1"
            " and kind = 'login.password_failed'",
            account_id,
        )
        == 1
    )


async def test_an_unknown_identifiers_failed_sign_in_leaves_no_trace_once_processed(
    bench: Bench,
):
    with contextlib.suppress(Unauthenticated):
        await bench.identity.login(identifier="nobody@example.jp", password="guess", client=CLIENT)

    await bench.deliver_outbox()

    assert await bench.pool.fetchval("select count(*) from security_events") == 0
    assert (
        await bench.pool.fetchval(
            "select count(*) from outbox where topic = 'identity.sign_in_failed'"
            " and state <> 'delivered'"
        )
        == 0
    )


async def test_a_failed_sign_in_delivered_twice_is_counted_once(bench: Bench):
    account_id = await an_account(bench, "hanako@example.jp")
    with contextlib.suppress(Unauthenticated):
        await bench.identity.login(identifier="hanako@example.jp", password="guess", client=CLIENT)
    await bench.deliver_outbox()
    # The relay delivers at least once: the same row again, as after a lost acknowledgement.
    async with bench.pool.acquire() as conn:
        await conn.execute(
            "update outbox set state = 'pending', available_at = now()"
            " where topic = 'identity.sign_in_failed'"
        )
    await bench.deliver_outbox()

    assert (
        await bench.pool.fetchval("select recent_failures from accounts where id = $1", account_id)
        == 1
    )


async def test_a_counted_failed_sign_in_keeps_no_account_address_or_device(bench: Bench):
    await an_account(bench, "hanako@example.jp")
    for identifier in ("hanako@example.jp", "nobody@example.jp"):
        with contextlib.suppress(Unauthenticated):
            await bench.identity.login(identifier=identifier, password="guess", client=CLIENT)
    await bench.deliver_outbox()

    payloads = await bench.pool.fetch(
        "select payload::text from outbox where topic = 'identity.sign_in_failed'"
    )
    assert len(payloads) == 2
    for (payload,) in payloads:
        for kept in ("192.0.2.7", "laptop", '"ua"', "-"):
            assert kept not in payload, payload
