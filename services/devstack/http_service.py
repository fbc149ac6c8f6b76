"""A service with an HTTP side (the partner gateway, the operators' console) in the
local stack: one more process after the four, on its documented ports under
`make run` (each overridable like the others') or free ones in tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from services.devstack.stack import LocalStack, ServiceProcess


def plan(
    stack: LocalStack, name: str, grpc_port: int, health_port: int, http_port: int
) -> tuple[ServiceProcess, int]:
    """The process of ``name`` on its ports, not yet started, and its HTTP port."""
    from services.devstack.stack import (
        DEFAULT_METRICS_PORTS,
        ServiceProcess,
        configured_port,
        free_port,
    )

    prefix = name.upper()
    if stack.fixed_ports:
        grpc_port = configured_port(f"{prefix}_GRPC_PORT", grpc_port)
        health_port = configured_port(f"{prefix}_HEALTH_PORT", health_port)
        http_port = configured_port(f"{prefix}_HTTP_PORT", http_port)
        metrics_port = configured_port(f"{prefix}_METRICS_PORT", DEFAULT_METRICS_PORTS[name])
    else:
        grpc_port, health_port, http_port, metrics_port = (free_port() for _ in range(4))
    process = ServiceProcess(name, grpc_port, health_port, metrics_port=metrics_port)
    return process, http_port


async def start(
    stack: LocalStack,
    process: ServiceProcess,
    http_port: int,
    env: Callable[[int], dict[str, str]],
    ready_path: str,
) -> str:
    """Start ``process`` like the other services; returns its base URL once
    ``ready_path`` answers 200."""
    # Kept with the process, so that a restart by make run's supervisor has them too.
    process.env = env(http_port)
    stack.processes[process.name] = process
    await stack._spawn(process, await stack._environment())
    await stack.wait_serving(process.name)
    url = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(60):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}{ready_path}")).status_code == 200:
                    return url
            await asyncio.sleep(0.1)
