"""Operators' sessions and sign-in on real PostgreSQL: a session is found only by
its cookie value and only until it ends or expires, and repeated wrong passwords
for one name are refused without a hash."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio

from services.console.bootstrap import MIGRATIONS
from services.console.domain.operators import entry, parse_operators
from services.console.storage import actions as action_store
from services.console.storage import sessions as session_store
from services.console.use_cases.sign_in import SignIn, SignInRefused
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate

PASSWORD = "an operator's long password"


@pytest_asyncio.fixture
async def pool(new_database: Callable[..., Awaitable[str]]) -> AsyncIterator[asyncpg.Pool]:
    opened = await create_pool(await new_database("console"), max_size=4)
    async with opened.acquire() as conn:
        await migrate(conn, "console", MIGRATIONS)
    try:
        yield opened
    finally:
        await close_pool(opened)


def sign_in(pool: asyncpg.Pool, failures_allowed: int = 3) -> SignIn:
    return SignIn(pool, parse_operators(entry("aiko", PASSWORD)), 3600, failures_allowed)


async def test_a_session_is_found_by_its_cookie_until_it_is_ended(pool: asyncpg.Pool) -> None:
    console = sign_in(pool)
    token, session = await console.sign_in("aiko", PASSWORD)
    found = await console.session(token)
    assert found is not None and found.operator == "aiko"
    assert found.csrf_token == session.csrf_token
    assert await console.session(token + "x") is None
    # Only a hash of the cookie is stored.
    assert await pool.fetchval("select count(*) from console_sessions where session_hash = $1",
                               token.encode()) == 0  # fmt: skip
    await console.sign_out(token, "aiko")
    assert await console.session(token) is None
    assert [a.action for a in await action_store.recent(pool)] == ["sign-out", "sign-in"]


async def test_an_expired_session_is_not_found_and_is_swept(pool: asyncpg.Pool) -> None:
    gone = datetime.now(UTC) - timedelta(seconds=1)
    await session_store.create(pool, "old", "aiko", "csrf", gone)
    assert await session_store.find(pool, "old") is None
    await session_store.forget_expired(pool)
    assert await pool.fetchval("select count(*) from console_sessions") == 0


async def test_repeated_wrong_passwords_refuse_even_the_right_one(pool: asyncpg.Pool) -> None:
    console = sign_in(pool, failures_allowed=3)
    for _ in range(3):
        with pytest.raises(SignInRefused):
            await console.sign_in("aiko", "not it at all")
    with pytest.raises(SignInRefused):
        await console.sign_in("aiko", PASSWORD)
    # Another operator name is not locked by them.
    with pytest.raises(SignInRefused):
        await console.sign_in("ken", PASSWORD)
    assert await session_store.recent_failures(pool, "ken") == 1
    await pool.execute("update console_sign_in_failures set failed_at = now() - interval '1 hour'")
    token, _ = await console.sign_in("aiko", PASSWORD)
    assert await console.session(token) is not None


async def test_wrong_passwords_from_one_address_do_not_lock_the_operator_out_elsewhere(
    pool: asyncpg.Pool,
) -> None:
    console = sign_in(pool, failures_allowed=3)
    for _ in range(5):
        with pytest.raises(SignInRefused):
            await console.sign_in("aiko", "not it at all", client="203.0.113.9")
    with pytest.raises(SignInRefused):
        await console.sign_in("aiko", PASSWORD, client="203.0.113.9")
    token, _ = await console.sign_in("aiko", PASSWORD, client="198.51.100.4")
    assert await console.session(token) is not None
