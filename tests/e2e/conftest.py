"""Fixtures for tests that run real services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest_asyncio

from services.devstack.pgbouncer import LocalPgBouncer
from tests.harness import Cluster


@pytest_asyncio.fixture
async def cluster(
    tmp_path: Path,
    new_database: Callable[..., Awaitable[str]],
    pooler: LocalPgBouncer | None,
) -> AsyncIterator[Cluster]:
    """An empty cluster; the test starts the services it needs (through PgBouncer
    when the run asks for it)."""
    running = Cluster(tmp_path, new_database, pooler=pooler)
    try:
        yield running
    finally:
        await running.close()
