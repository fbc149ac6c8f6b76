"""Configuration of the operators' console, read once from the environment."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from services.console.domain.operators import OperatorBook, parse_operators
from services.runtime.config import ConfigError, Secret, ServiceSettings, env


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsoleSettings(ServiceSettings):
    env_prefix: ClassVar[str] = "CONSOLE"
    default_grpc_port: ClassVar[int] = 50056
    default_health_port: ClassVar[int] = 50066
    default_metrics_port: ClassVar[int] = 9466

    operators: Secret = env(
        "CONSOLE_OPERATORS",
        help="who may sign in: NAME:ARGON2ID_HASH entries separated by ';' or new lines"
        " (`python -m services.console hash-password NAME` makes one)",
    )
    operator_tls_dir: str = env(
        "CONSOLE_OPERATOR_TLS_DIR",
        default="",
        help="folder of the operator certificate (operator.pem, operator-key.pem, ca.pem)"
        " the console presents to the services; empty = MAMORU_TLS_DIR",
    )
    http_host: str = env("CONSOLE_HTTP_HOST", default="127.0.0.1", help="interface of the pages")
    http_port: int = env("CONSOLE_HTTP_PORT", default=8081, help="HTTP port of the console")
    secure_cookies: bool = env(
        "CONSOLE_SECURE_COOKIES",
        default=False,
        help="mark cookies Secure (set it when the console is served over TLS)",
    )
    session_seconds: int = env(
        "CONSOLE_SESSION_SECONDS", default=8 * 3600, help="how long a sign-in lasts"
    )
    sign_in_failures_allowed: int = env(
        "CONSOLE_SIGN_IN_FAILURES_ALLOWED",
        default=10,
        help="failed sign-ins per operator name in 15 minutes before sign-in is refused",
    )
    peer_timeout_seconds: float = env(
        "CONSOLE_PEER_TIMEOUT_SECONDS", default=10.0, help="deadline of one call to a service"
    )
    alert_poll_seconds: float = env(
        "CONSOLE_ALERT_POLL_SECONDS",
        default=2.0,
        help="how often open pages ask for new alerts and reset progress",
    )

    def operator_tls(self) -> Path:
        return Path(self.operator_tls_dir) if self.operator_tls_dir else self.tls_dir

    def operator_book(self) -> OperatorBook:
        return parse_operators(self.operators.reveal())

    def validate(self) -> None:
        super().validate()
        try:
            book = self.operator_book()
        except ValueError as error:
            raise ConfigError(f"CONSOLE_OPERATORS: {error}") from None
        if not book.names():
            raise ConfigError("CONSOLE_OPERATORS names no operator")
        if not 0 <= self.http_port <= 65535:
            raise ConfigError("CONSOLE_HTTP_PORT must be between 0 and 65535")
        if not 60 <= self.session_seconds <= 24 * 3600:
            raise ConfigError("CONSOLE_SESSION_SECONDS must be between 60 and 86400")
        if self.sign_in_failures_allowed < 1:
            raise ConfigError("CONSOLE_SIGN_IN_FAILURES_ALLOWED must be at least 1")
        if not 0.2 <= self.alert_poll_seconds <= 60:
            raise ConfigError("CONSOLE_ALERT_POLL_SECONDS must be between 0.2 and 60")
        if self.peer_timeout_seconds <= 0:
            raise ConfigError("CONSOLE_PEER_TIMEOUT_SECONDS must be positive")
