"""The operators' console in the local stack: one more process after the gateway,
with one operator whose password `make run` makes once and keeps in
var/console-operator.json (owner-only)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.console.domain.operators import entry
from services.devstack import http_service

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
    name, password, operators = _operator(stack)
    process, http_port = http_service.plan(stack, "console", *CONSOLE_PORTS, CONSOLE_HTTP_PORT)
    url = await http_service.start(
        stack,
        process,
        http_port,
        lambda port: {"CONSOLE_HTTP_PORT": str(port), "CONSOLE_OPERATORS": operators},
        "/healthz",
    )
    return ConsoleLogin(url, name, password)
