"""A TCP relay in front of the real PostgreSQL, which a test can cut and restore.

Cutting drops every open connection and stops listening, which is what a
service sees when its database restarts or its network goes away: queries in
flight fail, new connections are refused. Restoring listens again on the same
port. The database behind is the session's real server (unix socket or TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse

from services.devstack.stack import free_port


class DatabaseProxy:
    def __init__(self, database_url: str) -> None:
        parts = urllib.parse.urlsplit(database_url)
        query = urllib.parse.parse_qs(parts.query)
        socket_dir = next((h for h in query.get("host", []) if h.startswith("/")), None)
        port = parts.port or int(query.get("port", ["5432"])[0])
        self._unix_path = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir else None
        self._tcp_target = (parts.hostname or "127.0.0.1", port)
        self.port = free_port()
        kept = {k: v for k, v in query.items() if k not in ("host", "port")}
        credentials = parts.netloc.rpartition("@")[0]
        self.url = urllib.parse.urlunsplit(
            parts._replace(
                netloc=f"{credentials}@127.0.0.1:{self.port}",
                query=urllib.parse.urlencode(kept, doseq=True),
            )
        )
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            if self._unix_path:
                up_reader, up_writer = await asyncio.open_unix_connection(self._unix_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self._tcp_target)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._relays.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()
