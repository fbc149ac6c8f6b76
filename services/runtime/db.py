"""The asyncpg connection pool every service opens once per process."""

from __future__ import annotations

import asyncio
import json

import asyncpg

# A statement still running after this long is a bug or a stuck lock, not a
# slow query; failing it frees the connection instead of starving the pool.
COMMAND_TIMEOUT_SECONDS = 30.0
_CLOSE_TIMEOUT_SECONDS = 10.0


async def create_pool(
    url: str, *, max_size: int = 10, application_name: str = "mamoru"
) -> asyncpg.Pool:
    """Open the process's pool; json and jsonb columns read and write Python values.

    ``application_name`` shows in ``pg_stat_activity``, so an operator can tell
    which service holds a lock.
    """
    if max_size < 1:
        raise ValueError("max_size must be at least 1")
    return await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=max_size,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
        server_settings={"application_name": application_name},
        init=_register_json_codecs,
    )


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully, waiting a bounded time for borrowed connections to return."""
    try:
        await asyncio.wait_for(pool.close(), timeout=_CLOSE_TIMEOUT_SECONDS)
    except TimeoutError:
        pool.terminate()


async def _register_json_codecs(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
