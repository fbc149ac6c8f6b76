"""The people's web pages in the local stack (`make run`): http://localhost:8080.

The pages' origin is where passkeys are made and used, so identity must accept it
(IDENTITY_WEBAUTHN_ORIGINS) and notify must write it into the links of its mail
(NOTIFY_LINK_BASE_URL); ``pages_env`` gives both, for the services started before
the pages. A link to 127.0.0.1:8080 still works: the pages redirect it to their origin.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from services.devstack.stack import LocalStack

WEB_PORTS = (50056, 50066)
WEB_HTTP_PORT = 8080


def web_http_port(fixed: bool) -> int:
    from services.devstack.stack import configured_port, free_port

    return configured_port("WEB_HTTP_PORT", WEB_HTTP_PORT) if fixed else free_port()


def origin(http_port: int) -> str:
    # localhost, not 127.0.0.1: a WebAuthn relying party is a domain name, never an address.
    return f"http://localhost:{http_port}"


def pages_env(http_port: int) -> dict[str, str]:
    """What identity and notify read so that passkeys and mail links fit the pages;
    a value already in the environment wins."""
    wanted = {
        # https://localhost stays for the demo's and the tests' software authenticators.
        "IDENTITY_WEBAUTHN_ORIGINS": f"https://localhost,{origin(http_port)}",
        "IDENTITY_WEBAUTHN_RP_ID": "localhost",
        "NOTIFY_LINK_BASE_URL": origin(http_port),
    }
    return {name: value for name, value in wanted.items() if not os.environ.get(name)}


def web_env(stack: LocalStack, http_port: int) -> dict[str, str]:
    """What the web process reads beyond the stack's shared environment."""
    key_file = stack.var_dir / "web.key"
    if not key_file.exists():
        key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        key_file.chmod(0o600)
    assert stack.card_processor is not None
    return {
        "WEB_SECRETS_KEY": key_file.read_text().strip(),
        "WEB_HTTP_PORT": str(http_port),
        "WEB_PUBLIC_URL": os.environ.get("WEB_PUBLIC_URL") or origin(http_port),
        "WEB_CARD_PROCESSOR_URL": stack.card_processor.url,
    }


async def start_web(stack: LocalStack, http_port: int) -> str:
    """Start the pages like the other services; returns their URL once they answer."""
    from services.devstack.stack import (
        DEFAULT_METRICS_PORTS,
        ServiceProcess,
        configured_port,
        free_port,
    )

    if stack.fixed_ports:
        grpc_port = configured_port("WEB_GRPC_PORT", WEB_PORTS[0])
        health_port = configured_port("WEB_HEALTH_PORT", WEB_PORTS[1])
        metrics_port = configured_port("WEB_METRICS_PORT", DEFAULT_METRICS_PORTS["web"])
    else:
        grpc_port, health_port, metrics_port = free_port(), free_port(), free_port()
    process = ServiceProcess("web", grpc_port, health_port, metrics_port=metrics_port)
    # Kept with the process, so that a restart by make run's supervisor has them too.
    process.env = web_env(stack, http_port)
    stack.processes["web"] = process
    await stack._spawn(process, await stack._environment())
    await stack.wait_serving("web")
    url = process.env["WEB_PUBLIC_URL"]
    async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(60):
        while True:
            with contextlib.suppress(httpx.TransportError):
                reply = await http.get(f"http://127.0.0.1:{http_port}/healthz")
                if reply.status_code == 200:
                    return url
            await asyncio.sleep(0.1)
