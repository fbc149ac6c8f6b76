"""The asyncpg connection pool every service opens once per process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator

import asyncpg

from services.runtime.errors import transient_kind

# A statement still running after this long is a bug or a stuck lock, not a
# slow query; failing it frees the connection instead of starving the pool.
COMMAND_TIMEOUT_SECONDS = 30.0
# A database host that swallows packets would otherwise hold each new connection
# (and the RPC waiting for it) for asyncpg's default of 60 s before UNAVAILABLE.
CONNECT_TIMEOUT_SECONDS = 10.0
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
        timeout=CONNECT_TIMEOUT_SECONDS,
        server_settings={"application_name": application_name},
        init=_register_json_codecs,
        reset=_keep_session,
        **_pooler_options(direct_url is not None),
    )
    if direct_url is not None:
        _direct_urls[id(pool)] = direct_url
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does first.

    asyncpg's default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: one more round trip per acquisition, for state
    Mamoru never leaves on a borrowed connection. What asyncpg does regardless of
    this hook (``Connection._reset``) rolls back a transaction left open and drops
    listener callbacks. Everything else a session can hold ends with its
    transaction when taken the way Mamoru's storage takes it: ``SET LOCAL``,
    ``pg_advisory_xact_lock``, cursors (none are ``WITH HOLD``). Session-long state
    (LISTEN, session advisory locks, plain SET) is taken only on a
    ``session_connection``, which runs the full reset itself before the connection
    goes back. Behind a transaction pooler the reset would reach whichever server
    session PgBouncer picked, so it never did anything useful there.
    """


def _pooler_options(pooled: bool) -> dict[str, int]:
    # A named prepared statement lives in one server session, which a transaction
    # pooler hands to other clients between transactions.
    return {"statement_cache_size": 0, "max_cached_statement_lifetime": 0} if pooled else {}


@contextlib.asynccontextmanager
async def session_connection(
    pool: asyncpg.Pool, *, application_name: str = "mamoru-listen"
) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose session lasts while it is held, as LISTEN needs.

    The only place for session-long state (LISTEN, ``pg_advisory_lock``, a plain
    SET): a connection from ``pool.acquire()`` goes back without a reset, so it
    may hold only what ends with its transaction. This one is reset on return.

    From ``pool`` normally; when the pool goes through a transaction pooler, a
    direct connection of its own (a pooler would move the session away, and the
    notifications with it).
    """
    direct = _direct_urls.get(id(pool))
    if direct is None:
        async with pool.acquire() as conn:
            try:
                yield conn
            finally:
                await _reset_session(conn)
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


async def _reset_session(conn: asyncpg.Connection) -> None:
    """Undo LISTEN, session locks and SETs before the pool lends the connection again.

    A connection that cannot be reset is terminated: the pool then replaces it
    instead of lending out a session in an unknown state.
    """
    if conn.is_closed():
        return
    try:
        if conn.is_in_transaction():
            await conn.execute("rollback")
        query = conn.get_reset_query()
        if query:
            await asyncio.wait_for(conn.execute(query), timeout=_CLOSE_TIMEOUT_SECONDS)
    except asyncio.CancelledError:
        conn.terminate()
        raise
    except Exception:
        # Whatever ended the session (a restart, a dropped socket) is reported by
        # the next use of the pool, not instead of what the holder was doing.
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
