"""The asyncpg connection pool every service opens once per process."""

from __future__ import annotations

import asyncio
import json
import urllib.parse

import asyncpg

from services.runtime.errors import transient_kind

# A statement still running after this long is a bug or a stuck lock, not a
# slow query; failing it frees the connection instead of starving the pool.
COMMAND_TIMEOUT_SECONDS = 30.0
# A database host that swallows packets would otherwise hold each new connection
# (and the RPC waiting for it) for asyncpg's default of 60 s before UNAVAILABLE.
CONNECT_TIMEOUT_SECONDS = 10.0
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
        timeout=CONNECT_TIMEOUT_SECONDS,
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


def describe_database(url: str) -> str:
    """``host:port/dbname`` of a PostgreSQL URL, for log lines; never the credentials."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    host = parts.hostname or next(iter(query.get("host", [])), "localhost")
    try:
        port = parts.port or int(next(iter(query.get("port", [])), "5432"))
    except ValueError:
        port = 5432
    name = urllib.parse.unquote(parts.path.lstrip("/")) or parts.username or "postgres"
    return f"{host}:{port}/{name}"


def not_ready_reason(error: BaseException, url: str) -> str | None:
    """Why the database cannot be used yet, in one line; None when waiting would not help.

    Unreachable, starting up, restarting or not created yet are worth waiting
    for; refused credentials, a broken migration or a bug are not.
    """
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        reason = "the database does not exist"
    elif transient_kind(error) is not None:
        lines = str(error).splitlines()
        reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    else:
        return None
    password = urllib.parse.urlsplit(url).password
    if password:
        reason = reason.replace(password, "***")
    return reason[:300]
