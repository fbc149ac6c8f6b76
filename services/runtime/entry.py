"""What ``python -m services.<name> [migrate]`` runs.

Without arguments the service serves until SIGTERM. ``migrate`` applies the
runtime's and the service's migrations over one direct connection and exits:
a Kubernetes Job runs it before the Deployment rolls, against the database
itself rather than the transaction-mode pooler, since migrations hold a
session advisory lock. It reads only the database and logging settings, so the
Job needs none of the service's secrets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg
import structlog

from services.runtime import server
from services.runtime.config import ConfigError, Secret, ServiceSettings, env, load_settings
from services.runtime.logging import configure_logging
from services.runtime.migrations import MigrationError, migrate

USAGE = "usage: python -m services.{name} [migrate]"
# Long enough for a freshly created PostgreSQL to accept connections; the Job retries after.
CONNECT_TIMEOUT_SECONDS = 30.0

log = structlog.get_logger("mamoru.migrate")


@dataclasses.dataclass(frozen=True)
class MigrateSettings:
    """The few settings ``migrate`` reads, with the same variable names as the service."""

    database_url: Secret = env(
        "DATABASE_URL", help="PostgreSQL URL of the service's database (direct, not pooled)"
    )
    log_format: str = env("LOG_FORMAT", default="auto", help="json, console or auto")
    log_level: str = env("LOG_LEVEL", default="info", help="debug, info, warning or error")

    def validate(self) -> None:
        if not self.database_url.reveal().startswith(("postgres://", "postgresql://")):
            raise ConfigError("DATABASE_URL must be a postgresql:// URL")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError("LOG_FORMAT must be json, console or auto")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("LOG_LEVEL must be debug, info, warning or error")


def database_name(url: str) -> str:
    """``host:port/database`` of a PostgreSQL URL, without user or password, for log lines."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    return f"{host}:{port}{parts.path or '/'}"


async def apply(name: str, url: str, migrations: Path) -> list[str]:
    """Apply ``name``'s pending migrations over one direct connection; return what ran."""
    conn = await asyncpg.connect(
        url,
        timeout=CONNECT_TIMEOUT_SECONDS,
        server_settings={"application_name": f"mamoru-{name}-migrate"},
    )
    try:
        return await migrate(conn, name, migrations)
    finally:
        await conn.close()


def run_migrate(name: str, migrations: Path, environ: Mapping[str, str] | None = None) -> int:
    """``migrate``: 0 once the database is up to date, 1 when it cannot be, 2 on bad settings."""
    try:
        settings = load_settings(MigrateSettings, environ)
    except ConfigError as error:
        print(f"mamoru-{name} migrate: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(name, fmt=settings.log_format, level=settings.log_level)
    url = settings.database_url.reveal()
    target = database_name(url)
    try:
        applied = asyncio.run(apply(name, url, migrations))
    except MigrationError as error:
        log.error("migrations.failed", database=target, error=str(error))
        return 1
    except (OSError, TimeoutError, socket.gaierror) as error:
        log.error("migrations.database_unreachable", database=target, error=str(error) or "timeout")
        return 1
    except asyncpg.PostgresError as error:
        log.error("migrations.database_refused", database=target, error=str(error))
        return 1
    log.info("migrations.applied", database=target, applied=applied)
    return 0


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def main(
    name: str,
    settings_cls: type[SettingsT],
    migrations: Path,
    build: server.BuildApp,
    argv: Sequence[str] | None = None,
) -> None:
    """Serve, or with ``migrate`` apply the migrations and exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        server.main(name, settings_cls, migrations, build)
        return
    if args == ["migrate"]:
        raise SystemExit(run_migrate(name, migrations))
    print(USAGE.format(name=name), file=sys.stderr)
    raise SystemExit(2)
