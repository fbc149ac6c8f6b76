"""An embedded PostgreSQL 16 for local runs and tests, unless DATABASE_URL names one.

The ``pgserver`` package ships the PostgreSQL binaries and starts a server on a
unix socket inside its data folder, so a fresh machine needs no installed
database. A server started here lives until ``stop_embedded`` or the end of the
process, whichever comes first.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import urllib.parse
import warnings
from pathlib import Path

import asyncpg
import psutil

with warnings.catch_warnings():
    # pgserver asks platformdirs for a runtime folder at import and warns when
    # XDG_RUNTIME_DIR is unset (containers, CI); the fallback it takes is fine.
    warnings.simplefilter("ignore")
    import pgserver
    from pgserver.postgres_server import PostgresServer, get_server

_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_started: dict[Path, PostgresServer] = {}
_started_guard = threading.Lock()


def server_url(data_dir: Path) -> str:
    """The admin URL of the server to use: ``$DATABASE_URL``, else an embedded one.

    The embedded server keeps its data in ``data_dir`` (created when missing) and
    is reused when it is already running there, by this or another process.
    """
    configured = os.environ.get("DATABASE_URL", "")
    if configured:
        return configured
    data_dir = data_dir.expanduser().resolve()
    with _started_guard:
        server = _started.get(data_dir)
        if server is None:
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            _forget_dead_handles(data_dir)
            server = get_server(data_dir, cleanup_mode="stop")
            _started[data_dir] = server
    url: str = server.get_uri()
    return url


def stop_embedded(data_dir: Path | None = None) -> None:
    """Release the embedded server in ``data_dir``, or every one this process started.

    Safe to call again. pgserver counts the processes using a data folder and
    stops the server when the last one lets go, so a server shared with
    another process stays up for it.
    """
    with _started_guard:
        if data_dir is None:
            servers = list(_started.values())
            _started.clear()
        else:
            server = _started.pop(data_dir.expanduser().resolve(), None)
            servers = [] if server is None else [server]
    for server in servers:
        server.cleanup()


def pg_bin_dir() -> Path:
    """The folder holding ``psql``, ``pgbench`` and the other PostgreSQL programs."""
    return Path(pgserver.__file__).resolve().parent / "pginstall" / "bin"


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointed at database ``name``, keeping host, user and options."""
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(name)))


async def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` unless it exists, and return its URL.

    Several processes may call this at once for the same name: whoever loses
    the race sees the database the winner created.
    """
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(
            f"database name {name!r} must be lowercase letters, digits and underscores, "
            "starting with a letter or underscore, at most 63 characters"
        )
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("select true from pg_database where datname = $1", name)
        if not exists:
            # A concurrent caller may create it between our check and our CREATE.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                # CREATE DATABASE takes no bound parameters; the name was validated above.
                await conn.execute(f'create database "{name}"')
    finally:
        await conn.close()
    return database_url(server_url, name)


def _forget_dead_handles(data_dir: Path) -> None:
    """Drop processes that died without releasing the server from pgserver's list.

    pgserver stops the server only when the list is empty, so a crashed run
    would otherwise leave every later run unable to stop it.
    """
    handles = data_dir / ".handle_pids.json"
    with PostgresServer._lock:
        if not handles.exists():
            return
        try:
            pids = json.loads(handles.read_text())
        except ValueError:
            pids = []
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))
