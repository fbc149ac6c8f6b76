"""A local PgBouncer in transaction mode in front of a PostgreSQL server, as
production runs CloudNativePG's Pooler in front of its cluster.

Tests (``MAMORU_PGBOUNCER=1``) and ``make run PGBOUNCER=1`` put the
services' traffic through it, so anything that needs a session across
transactions (named prepared statements, LISTEN, session locks, SET) fails
here before it fails in production. It uses Debian's ``pgbouncer`` program.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import urllib.parse
from pathlib import Path

import asyncpg

ENABLE_VARIABLE = "MAMORU_PGBOUNCER"
_START_SECONDS = 15.0


def wanted() -> bool:
    """Whether this run asks for PgBouncer in front of the databases."""
    return os.environ.get(ENABLE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def program() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError(
            "pgbouncer is not installed (make pgbouncer, or apt-get install pgbouncer)"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalPgBouncer:
    """PgBouncer on a free local port, pooling every database of ``server_url``."""

    def __init__(
        self,
        server_url: str,
        folder: Path,
        *,
        pool_size: int = 10,
        max_server_connections: int = 60,
    ) -> None:
        self.server_url = server_url
        self.folder = folder
        self.pool_size = pool_size
        self.max_server_connections = max_server_connections
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None
        parts = urllib.parse.urlsplit(server_url)
        query = urllib.parse.parse_qs(parts.query)
        self._user = urllib.parse.unquote(parts.username or "postgres")
        self._password = urllib.parse.unquote(parts.password or "")
        # The embedded server listens on a unix socket only (host=<folder> in the query).
        self._host = (query.get("host") or [parts.hostname or "127.0.0.1"])[0]
        self._server_port = parts.port or 5432

    @property
    def log(self) -> Path:
        return self.folder / "pgbouncer.log"

    def url(self, direct_url: str) -> str:
        """``direct_url`` (a database on the server) as reached through PgBouncer."""
        parts = urllib.parse.urlsplit(direct_url)
        credentials = urllib.parse.quote(self._user)
        if self._password:
            credentials += ":" + urllib.parse.quote(self._password)
        return urllib.parse.urlunsplit(
            (
                "postgresql",
                f"{credentials}@127.0.0.1:{self.port}",
                parts.path or "/postgres",
                "",
                "",
            )
        )

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        config = self.folder / "pgbouncer.ini"
        userlist = self.folder / "userlist.txt"
        # Clients are local test processes: trust, with the one user the server knows.
        userlist.write_text(f'"{self._user}" "{self._password}"\n')
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={self._host} port={self._server_port} user={self._user}"
                    + (f" password={self._password}" if self._password else ""),
                    "",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {userlist}",
                    "pool_mode = transaction",
                    f"default_pool_size = {self.pool_size}",
                    # Tests make databases by the hundred: sessions to finished ones must
                    # close soon, and all of them together stay under the server's limit
                    # (clients then wait for a session instead of failing).
                    f"max_user_connections = {self.max_server_connections}",
                    "server_idle_timeout = 5",
                    "max_client_conn = 2000",
                    "server_reset_query =",
                    # asyncpg sends it at start; PgBouncer must not refuse the connection.
                    "ignore_startup_parameters = extra_float_digits",
                    # Logs go to stderr, which is a file this process opened, so the
                    # user PgBouncer runs as needs no access to the folder.
                    "syslog = 0",
                    "log_connections = 0",
                    "log_disconnections = 0",
                    "",
                ]
            )
        )
        command = [program()]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root; it runs as the server's owner, who
            # may also open the server's socket folder.
            owner = _owner_of(Path(self._host)) if self._host.startswith("/") else "nobody"
            command += ["-u", owner]
        with self.log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *command, str(config), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        await self._wait_accepting()

    async def _wait_accepting(self) -> None:
        deadline = asyncio.get_running_loop().time() + _START_SECONDS
        last: BaseException | None = None
        while asyncio.get_running_loop().time() < deadline:
            if self._process is not None and self._process.returncode is not None:
                tail = self.log.read_text()[-2000:] if self.log.exists() else ""
                raise RuntimeError(f"pgbouncer exited with {self._process.returncode}: {tail}")
            try:
                conn = await asyncpg.connect(
                    self.url(self.server_url), statement_cache_size=0, timeout=2
                )
            except (OSError, asyncpg.PostgresError) as error:
                last = error
                await asyncio.sleep(0.1)
                continue
            await conn.close()
            return
        raise RuntimeError(f"pgbouncer did not accept connections within {_START_SECONDS}s: {last}")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def _owner_of(path: Path) -> str:
    import pwd

    return pwd.getpwuid(path.stat().st_uid).pw_name
