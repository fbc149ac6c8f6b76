"""The operators' console in the local stack: one more process after the gateway,
with one operator whose password `make run` makes once and keeps in
var/console-operator.json (owner-only)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from services.console.domain.operators import entry

if TYPE_CHECKING:
    from services.devstack.stack import LocalStack

CONSOLE_PORTS = (50056, 50066)
CONSOLE_HTTP_PORT = 8081
OPERATOR_FILE = "console-operator.json"
OPERATOR_NAME = "demo-operator"


@dataclass(frozen=True)
class ConsoleLogin:
    url: str
    name: str
    password: str


def _operator(stack: LocalStack) -> tuple[str, str, str]:
    """(name, password, CONSOLE_OPERATORS entry), made on the first start and kept."""
    path = stack.var_dir / OPERATOR_FILE
    if not path.exists():
        password = secrets.token_urlsafe(12)
        kept = {
            "name": OPERATOR_NAME,
            "password": password,
            "entry": entry(OPERATOR_NAME, password),
        }
        path.write_text(json.dumps(kept, indent=2))
        path.chmod(0o600)
    kept = json.loads(path.read_text())
    return kept["name"], kept["password"], kept["entry"]


async def start_console(stack: LocalStack) -> ConsoleLogin:
    """Start the console like the other services; returns where and as whom to sign in."""
    from services.devstack.stack import (
        DEFAULT_METRICS_PORTS,
        ServiceProcess,
        configured_port,
        free_port,
    )

    if stack.fixed_ports:
        grpc_port = configured_port("CONSOLE_GRPC_PORT", CONSOLE_PORTS[0])
        health_port = configured_port("CONSOLE_HEALTH_PORT", CONSOLE_PORTS[1])
        http_port = configured_port("CONSOLE_HTTP_PORT", CONSOLE_HTTP_PORT)
        metrics_port = configured_port("CONSOLE_METRICS_PORT", DEFAULT_METRICS_PORTS["console"])
    else:
        grpc_port, health_port, http_port, metrics_port = (free_port() for _ in range(4))
    name, password, operators = _operator(stack)
    process = ServiceProcess("console", grpc_port, health_port, metrics_port=metrics_port)
    # Kept with the process, so that a restart by make run's supervisor has them too.
    process.env = {"CONSOLE_HTTP_PORT": str(http_port), "CONSOLE_OPERATORS": operators}
    stack.processes["console"] = process
    await stack._spawn(process, await stack._environment())
    await stack.wait_serving("console")
    url = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(60):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return ConsoleLogin(url, name, password)
            await asyncio.sleep(0.1)
