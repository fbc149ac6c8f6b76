"""Configuration of the people's web pages, read once from the environment."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import ClassVar
from urllib.parse import urlsplit

from services.runtime.config import ConfigError, Secret, ServiceSettings, env


@dataclasses.dataclass(frozen=True, kw_only=True)
class WebSettings(ServiceSettings):
    env_prefix: ClassVar[str] = "WEB"
    default_grpc_port: ClassVar[int] = 50056
    default_health_port: ClassVar[int] = 50066
    default_metrics_port: ClassVar[int] = 9466

    secrets_key: Secret = env(
        "WEB_SECRETS_KEY",
        help="base64 of 32 random bytes: seals browser sessions (tokens, device keys) at rest;"
        " the same on every replica",
    )
    http_host: str = env("WEB_HTTP_HOST", default="127.0.0.1", help="interface of the pages")
    http_port: int = env("WEB_HTTP_PORT", default=8080, help="HTTP port of the pages")
    public_url: str = env(
        "WEB_PUBLIC_URL",
        default="http://localhost:8080",
        help="the pages' origin as browsers see it; must be one of identity's"
        " IDENTITY_WEBAUTHN_ORIGINS (passkeys) and the base of notify's links;"
        " other hosts are redirected to it",
    )
    session_hours: float = env(
        "WEB_SESSION_HOURS", default=12.0, help="how long an idle browser session is kept"
    )
    card_processor_url: str = env(
        "WEB_CARD_PROCESSOR_URL",
        default="",
        help="the sandbox card processor that tokenises a card number typed into the"
        " top-up page (empty: the page offers no new card)",
    )
    trust_forwarded_for: bool = env(
        "WEB_TRUST_FORWARDED_FOR",
        default=False,
        help="take the person's IP from X-Forwarded-For (only behind a proxy that sets it)",
    )
    call_timeout_seconds: float = env(
        "WEB_CALL_TIMEOUT_SECONDS", default=10.0, help="deadline of one identity or wallet call"
    )

    def sealing_key(self) -> bytes:
        return base64.b64decode(self.secrets_key.reveal(), validate=True)

    def origin(self) -> str:
        return self.public_url.rstrip("/")

    def secure_cookies(self) -> bool:
        return urlsplit(self.public_url).scheme == "https"

    def validate(self) -> None:
        super().validate()
        try:
            key = self.sealing_key()
        except (binascii.Error, ValueError):
            raise ConfigError("WEB_SECRETS_KEY must be base64") from None
        if len(key) != 32:
            raise ConfigError("WEB_SECRETS_KEY must decode to 32 bytes")
        if not 0 <= self.http_port <= 65535:
            raise ConfigError("WEB_HTTP_PORT must be between 0 and 65535")
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in "/":
            raise ConfigError("WEB_PUBLIC_URL must be an origin such as https://pay.example.jp")
        if self.session_hours <= 0:
            raise ConfigError("WEB_SESSION_HOURS must be positive")
        if self.call_timeout_seconds <= 0:
            raise ConfigError("WEB_CALL_TIMEOUT_SECONDS must be positive")
