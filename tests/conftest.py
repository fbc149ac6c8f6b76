"""Shared fixtures: one PostgreSQL server per test session, a fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
import pytest_asyncio

from services.devstack import devdb, pgbouncer


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Admin URL of the session's server: $DATABASE_URL, else an embedded one."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    url = devdb.server_url(tmp_path_factory.mktemp("postgres") / "data")
    try:
        yield url
    finally:
        devdb.stop_embedded()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pooler(
    pg_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[pgbouncer.LocalPgBouncer | None]:
    """PgBouncer in transaction mode in front of the server when MAMORU_PGBOUNCER=1:
    services started by the harness then reach their databases through it."""
    if not pgbouncer.wanted():
        yield None
        return
    bouncer = pgbouncer.LocalPgBouncer(pg_server_url, tmp_path_factory.mktemp("pgbouncer"))
    await bouncer.start()
    try:
        yield bouncer
    finally:
        await bouncer.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _databases_to_drop(pg_server_url: str) -> AsyncIterator[list[str]]:
    names: list[str] = []
    yield names
    if not names:
        return
    conn = await asyncpg.connect(pg_server_url)
    try:
        for name in names:
            # Names come from new_database, which only makes plain identifiers.
            await conn.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await conn.close()


@pytest.fixture
def new_database(
    pg_server_url: str, _databases_to_drop: list[str]
) -> Callable[..., Awaitable[str]]:
    """``await new_database()`` creates an empty database and returns its URL.

    An optional ``label`` (a lowercase identifier) prefixes the name, which helps
    when reading ``pg_stat_activity``. Every database is dropped at session end.
    """

    async def create(label: str = "test") -> str:
        name = f"{label}_{uuid.uuid4().hex[:12]}"
        _databases_to_drop.append(name)
        return await devdb.ensure_database(pg_server_url, name)

    return create
