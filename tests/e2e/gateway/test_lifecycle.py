"""The gateway stops like every service: on shutdown it takes no new connection
and lets the request in flight finish."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from services.devstack.stack import free_port
from tests.e2e.gateway.conftest import wait_ready
from tests.harness import Cluster

BODY = b"grant_type=client_credentials"


async def test_shutdown_refuses_new_connections_and_finishes_the_request_in_flight(
    tmp_path: Path, new_database: Callable[..., Awaitable[str]]
) -> None:
    cluster = Cluster(tmp_path, new_database)
    port = free_port()
    try:
        await cluster.start("risk")
        await cluster.start(
            "gateway",
            env={
                "GATEWAY_SECRETS_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
                "GATEWAY_GRPC_PORT": str(free_port()),
                "GATEWAY_HEALTH_PORT": str(free_port()),
                "GATEWAY_HTTP_PORT": str(port),
            },
        )
        async with httpx.AsyncClient(timeout=10) as http:
            await wait_ready(http, f"http://127.0.0.1:{port}")

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # Headers and half the body: the request has begun and waits for the rest.
        writer.write(
            b"POST /oauth/token HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY[:10]
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        stopping = asyncio.create_task(cluster.stop("gateway"))

        async def refused() -> bool:
            try:
                _, probe = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return True
            probe.close()
            return False

        async with asyncio.timeout(60):
            while not await refused():  # noqa: ASYNC110 - polls the port from outside
                await asyncio.sleep(0.02)
        writer.write(BODY[10:])
        await writer.drain()
        async with asyncio.timeout(60):
            status_line = await reader.readline()
        # No client credentials: an OAuth error, answered rather than cut off.
        assert status_line.startswith((b"HTTP/1.1 400", b"HTTP/1.1 401")), status_line
        writer.close()
        await asyncio.wait_for(stopping, timeout=15)
    finally:
        await cluster.close()
