"""The gateway's background work: the HTTP server itself, and housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import asyncpg
import structlog
import uvicorn
from fastapi import FastAPI

from services.gateway.storage import partners as partner_store
from services.runtime.server import Background

_log = structlog.get_logger("mamoru.gateway.jobs")
HOUSEKEEPING_SECONDS = 60.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the runtime's lifecycle: the runtime owns SIGTERM, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """Listen at once, so requests queue in the backlog until the server takes them."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def http_server(
    app: FastAPI, sock: socket.socket, *, stopping: asyncio.Event, grace_seconds: float
) -> Background:
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=max(int(grace_seconds), 1),
    )
    server = _EmbeddedServer(config)

    async def run(stop: asyncio.Event) -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        # Stop taking requests as soon as shutdown begins; in-flight ones finish.
        waiters = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait([serving, *waiters], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        server.should_exit = True
        await serving

    return run


def housekeeping(pool: asyncpg.Pool) -> Background:
    """Forget used assertion IDs past their expiry, old rate windows and old keys."""

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await partner_store.forget_expired(pool)
            except Exception:
                _log.exception("gateway.housekeeping_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=HOUSEKEEPING_SECONDS)

    return run
