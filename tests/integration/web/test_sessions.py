"""Browser sessions on real PostgreSQL: sealed at rest, keyed by the id's hash,
forgotten when idle; a nobody's visit is kept for an hour only."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest_asyncio

from services.gateway.domain.sealing import SecretBox
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate
from services.web.bootstrap import MIGRATIONS
from services.web.domain.sessions import BrowserSession, new_id
from services.web.storage.sessions import SessionStore

DAY = 24 * 3600.0


@pytest_asyncio.fixture
async def pool(new_database: Callable[..., Awaitable[str]]) -> AsyncIterator[asyncpg.Pool]:
    opened = await create_pool(await new_database("web"), max_size=4)
    async with opened.acquire() as conn:
        await migrate(conn, "web", MIGRATIONS)
    try:
        yield opened
    finally:
        await close_pool(opened)


async def test_a_session_is_stored_sealed_under_the_hash_of_its_id(pool: asyncpg.Pool) -> None:
    store = SessionStore(pool, SecretBox(secrets.token_bytes(32)), DAY)
    session_id = new_id()
    session = BrowserSession(refresh_token="refresh-secret-1", access_token="a")
    await store.save(session_id, session)
    assert await store.load(session_id) == session
    assert await store.load(new_id()) is None
    rows = await pool.fetch("select id_hash, sealed from browser_sessions")
    assert len(rows) == 1
    assert session_id.encode() not in bytes(rows[0]["id_hash"])
    assert b"refresh-secret-1" not in bytes(rows[0]["sealed"])
    # Another key (another deployment, a stolen dump) opens nothing.
    stranger = SessionStore(pool, SecretBox(secrets.token_bytes(32)), DAY)
    assert await stranger.load(session_id) is None


async def test_idle_sessions_are_forgotten_and_a_visit_lasts_an_hour(pool: asyncpg.Pool) -> None:
    store = SessionStore(pool, SecretBox(secrets.token_bytes(32)), DAY)
    visit, person = new_id(), new_id()
    await store.save(visit, BrowserSession())
    await store.save(person, BrowserSession(refresh_token="r"))
    lives = {
        row["signed_in"]: row["seconds"]
        for row in await pool.fetch(
            "select sealed is not null and expires_at > now() + interval '2 hours' as signed_in,"
            " extract(epoch from expires_at - now()) as seconds from browser_sessions"
        )
    }
    assert lives[False] <= 3600 < lives[True] <= DAY
    await pool.execute("update browser_sessions set expires_at = now() - interval '1 second'")
    assert await store.load(person) is None
    assert await store.forget_expired() == 2
