"""The asyncpg connection pool every service opens once per process."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import asyncpg

# A statement still running after this long is a bug or a stuck lock, not a
# slow query; failing it frees the connection instead of starving the pool.
COMMAND_TIMEOUT_SECONDS = 30.0
_CLOSE_TIMEOUT_SECONDS = 10.0


# Pools whose connections go through a transaction-mode pooler, with the direct
# URL their session-long work uses. Keyed by id: asyncpg pools take no attributes.
_direct_urls: dict[int, str] = {}


async def create_pool(
    url: str,
    *,
    max_size: int = 10,
    application_name: str = "mamoru",
    direct_url: str | None = None,
) -> asyncpg.Pool:
    """Open the process's pool; json and jsonb columns read and write Python values.

    ``application_name`` shows in ``pg_stat_activity``, so an operator can tell
    which service holds a lock. ``direct_url`` says that ``url`` is a pooler in
    transaction mode (PgBouncer): each transaction may run on another server
    session, so no statement is prepared by name and ``session_connection``
    opens its sessions on ``direct_url`` instead.
    """
    if max_size < 1:
        raise ValueError("max_size must be at least 1")
    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=max_size,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
        server_settings={"application_name": application_name},
        init=_register_json_codecs,
        **_pooler_options(direct_url is not None),
    )
    if direct_url is not None:
        _direct_urls[id(pool)] = direct_url
    return pool


def _pooler_options(pooled: bool) -> dict[str, int]:
    # A named prepared statement lives in one server session, which a transaction
    # pooler hands to other clients between transactions.
    return {"statement_cache_size": 0, "max_cached_statement_lifetime": 0} if pooled else {}


@contextlib.asynccontextmanager
async def session_connection(
    pool: asyncpg.Pool, *, application_name: str = "mamoru-listen"
) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose session lasts while it is held, as LISTEN needs.

    From ``pool`` normally; when the pool goes through a transaction pooler, a
    direct connection of its own (a pooler would move the session away, and the
    notifications with it).
    """
    direct = _direct_urls.get(id(pool))
    if direct is None:
        async with pool.acquire() as conn:
            yield conn
        return
    conn = await asyncpg.connect(
        direct,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
        server_settings={"application_name": application_name},
    )
    try:
        await _register_json_codecs(conn)
        yield conn
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), timeout=_CLOSE_TIMEOUT_SECONDS)
        if not conn.is_closed():
            conn.terminate()


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully, waiting a bounded time for borrowed connections to return."""
    _direct_urls.pop(id(pool), None)
    try:
        await asyncio.wait_for(pool.close(), timeout=_CLOSE_TIMEOUT_SECONDS)
    except TimeoutError:
        pool.terminate()


async def _register_json_codecs(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
