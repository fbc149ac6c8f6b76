"""An HTTP server (uvicorn) inside the runtime's lifecycle, for services with an HTTP side.

The partner gateway and the operators' console serve FastAPI apps this way: the
socket is bound while the service is wired, so requests queue in the backlog
until the server takes them, and the runtime, not uvicorn, owns SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from services.runtime.server import Background


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
