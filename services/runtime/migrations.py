"""Plain SQL migrations, applied once each, in number order, at service start.

A component (``runtime`` or a service name) keeps its files as
``NNNN_description.sql`` in one folder. Each file runs in its own transaction
and is recorded in ``schema_migrations`` with its sha256, so an edited, lost or
duplicated file stops start-up instead of leaving databases that differ
silently. A session advisory lock makes replicas that start together take
turns, so each file runs once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import asyncpg

RUNTIME_COMPONENT = "runtime"
RUNTIME_MIGRATIONS = Path(__file__).resolve().with_name("migrations")

_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
# One key for every component: migrations are rare, and one lock keeps
# a service's files from racing the runtime's own.
_LOCK_KEY = int.from_bytes(b"mamoru-m", "big")
# Waiting for another replica's migration, or running a large backfill, may
# outlast the pool's command timeout; it must not fail start-up for that.
_TIMEOUT_SECONDS = 3600.0

_CREATE_TABLE = """
create table if not exists schema_migrations (
    component text not null,
    version int not null,
    name text not null,
    checksum text not null,
    applied_at timestamptz not null default now(),
    primary key (component, version)
)
"""


class MigrationError(Exception):
    """The migrations cannot be applied safely; the service must not start."""


@dataclasses.dataclass(frozen=True)
class MigrationFile:
    """One ``NNNN_description.sql`` file as read from disk."""

    version: int
    name: str
    path: Path
    sql: str
    checksum: str


def read_migrations(component: str, folder: Path) -> list[MigrationFile]:
    """The component's migration files in version order, refusing ambiguous folders."""
    if not folder.is_dir():
        raise MigrationError(f"{component}: migrations folder {folder} does not exist")
    files: dict[int, MigrationFile] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(
                f"{component}: migration file {path} must be named NNNN_description.sql "
                "(four digits, then lowercase letters, digits and underscores)"
            )
        version = int(match.group(1))
        if version in files:
            raise MigrationError(
                f"{component}: migrations {files[version].path.name} and {path.name} "
                f"in {folder} share number {version:04d}; renumber one of them"
            )
        content = path.read_bytes()
        files[version] = MigrationFile(
            version=version,
            name=path.name,
            path=path,
            sql=content.decode("utf-8"),
            checksum=hashlib.sha256(content).hexdigest(),
        )
    return [files[version] for version in sorted(files)]


async def apply_migrations(conn: asyncpg.Connection, component: str, folder: Path) -> list[str]:
    """Apply the component's pending files; return them as ``component/file`` names.

    ``conn`` must not be inside a transaction: each file gets its own.
    """
    files = read_migrations(component, folder)
    if conn.is_in_transaction():
        raise MigrationError(
            f"{component}: migrations need a connection outside any transaction, "
            "since each file commits on its own"
        )
    await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY, timeout=_TIMEOUT_SECONDS)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch(
            "select version, name, checksum from schema_migrations where component = $1",
            component,
        )
        recorded = {row["version"]: (row["name"], row["checksum"]) for row in rows}
        pending = _pending(component, folder, files, recorded)
        applied: list[str] = []
        for migration in pending:
            await _apply_one(conn, component, migration)
            applied.append(f"{component}/{migration.name}")
        return applied
    finally:
        if not conn.is_closed():
            await conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)


async def migrate(conn: asyncpg.Connection, service: str, folder: Path) -> list[str]:
    """Apply the runtime's own migrations (outbox and friends), then the service's."""
    applied = await apply_migrations(conn, RUNTIME_COMPONENT, RUNTIME_MIGRATIONS)
    applied += await apply_migrations(conn, service, folder)
    return applied


def _pending(
    component: str,
    folder: Path,
    files: list[MigrationFile],
    recorded: dict[int, tuple[str, str]],
) -> list[MigrationFile]:
    by_version = {migration.version: migration for migration in files}
    for version, (name, checksum) in sorted(recorded.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"{component}: migration {name} was applied to this database but is "
                f"missing from {folder}; restore the file"
            )
        if migration.checksum != checksum:
            raise MigrationError(
                f"{component}: migration {migration.path} changed after it was applied "
                f"(recorded sha256 {checksum[:12]}, file now {migration.checksum[:12]}); "
                "restore the applied content and put the change in a new migration"
            )
    newest = max(recorded, default=0)
    pending = [migration for migration in files if migration.version not in recorded]
    for migration in pending:
        if migration.version < newest:
            raise MigrationError(
                f"{component}: migration {migration.path} is numbered below "
                f"{recorded[newest][0]}, which is already applied; give it a number "
                f"above {newest:04d} so every database applies files in the same order"
            )
    return pending


async def _apply_one(conn: asyncpg.Connection, component: str, migration: MigrationFile) -> None:
    try:
        async with conn.transaction():
            # No bound parameters, so asyncpg sends the file as one simple query
            # and a file may hold several statements.
            await conn.execute(migration.sql, timeout=_TIMEOUT_SECONDS)
            await conn.execute(
                "insert into schema_migrations (component, version, name, checksum)"
                " values ($1, $2, $3, $4)",
                component,
                migration.version,
                migration.name,
                migration.checksum,
            )
    except asyncpg.PostgresError as error:
        raise MigrationError(
            f"{component}: migration {migration.path} failed and was rolled back: {error}"
        ) from error
