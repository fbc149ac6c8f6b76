"""Configuration of the partner gateway, read once from the environment."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import ClassVar

from services.runtime.config import ConfigError, Secret, ServiceSettings, env


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewaySettings(ServiceSettings):
    env_prefix: ClassVar[str] = "GATEWAY"
    default_grpc_port: ClassVar[int] = 50055
    default_health_port: ClassVar[int] = 50065
    default_metrics_port: ClassVar[int] = 9465

    secrets_key: Secret = env(
        "GATEWAY_SECRETS_KEY",
        help="base64 of 32 random bytes: seals merchant keys and webhook secrets at rest"
        " and signs access tokens; the same on every replica",
    )
    http_host: str = env("GATEWAY_HTTP_HOST", default="127.0.0.1", help="interface of the API")
    http_port: int = env("GATEWAY_HTTP_PORT", default=8088, help="HTTP port of the partner API")
    public_url: str = env(
        "GATEWAY_PUBLIC_URL",
        default="",
        help="base URL partners use (the token issuer); empty = http://HOST:PORT",
    )
    token_seconds: int = env(
        "GATEWAY_TOKEN_SECONDS", default=300, help="lifetime of an access token"
    )
    token_requests_per_minute: int = env(
        "GATEWAY_TOKEN_REQUESTS_PER_MINUTE",
        default=60,
        help="token requests a client may make a minute (each may cost an argon2 hash)",
    )
    partner_cache_seconds: float = env(
        "GATEWAY_PARTNER_CACHE_SECONDS",
        default=1.0,
        help="how long a replica trusts its copy of a partner: a revocation takes at most this",
    )
    wallet_timeout_seconds: float = env(
        "GATEWAY_WALLET_TIMEOUT_SECONDS", default=10.0, help="deadline of one wallet call"
    )
    webhook_timeout_seconds: float = env(
        "GATEWAY_WEBHOOK_TIMEOUT_SECONDS", default=5.0, help="deadline of one webhook delivery"
    )
    webhook_max_attempts: int = env(
        "GATEWAY_WEBHOOK_MAX_ATTEMPTS", default=12, help="deliveries tried before one is dead"
    )
    webhook_backoff_seconds: float = env(
        "GATEWAY_WEBHOOK_BACKOFF_SECONDS",
        default=2.0,
        help="first retry delay of a webhook; doubles each attempt up to an hour",
    )
    allow_http_webhooks: bool = env(
        "GATEWAY_ALLOW_HTTP_WEBHOOKS",
        default=False,
        help="accept http:// webhook URLs on any port and at private addresses"
        " (local development only; https on port 443 at public addresses otherwise)",
    )
    webhook_subscriptions_per_partner: int = env(
        "GATEWAY_WEBHOOK_SUBSCRIPTIONS_PER_PARTNER",
        default=10,
        help="active webhook subscriptions a partner may hold",
    )

    def sealing_key(self) -> bytes:
        return base64.b64decode(self.secrets_key.reveal(), validate=True)

    def issuer(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.http_host}:{self.http_port}"

    def validate(self) -> None:
        super().validate()
        try:
            key = self.sealing_key()
        except (binascii.Error, ValueError):
            raise ConfigError("GATEWAY_SECRETS_KEY must be base64") from None
        if len(key) != 32:
            raise ConfigError("GATEWAY_SECRETS_KEY must decode to 32 bytes")
        if not 0 <= self.http_port <= 65535:
            raise ConfigError("GATEWAY_HTTP_PORT must be between 0 and 65535")
        if not 30 <= self.token_seconds <= 3600:
            raise ConfigError("GATEWAY_TOKEN_SECONDS must be between 30 and 3600")
        if not 0 < self.partner_cache_seconds <= 5:
            raise ConfigError("GATEWAY_PARTNER_CACHE_SECONDS must be above 0 and at most 5")
        if self.token_requests_per_minute < 1:
            raise ConfigError("GATEWAY_TOKEN_REQUESTS_PER_MINUTE must be at least 1")
        if self.webhook_max_attempts < 1:
            raise ConfigError("GATEWAY_WEBHOOK_MAX_ATTEMPTS must be at least 1")
        if self.webhook_subscriptions_per_partner < 1:
            raise ConfigError("GATEWAY_WEBHOOK_SUBSCRIPTIONS_PER_PARTNER must be at least 1")
        if self.webhook_backoff_seconds <= 0:
            raise ConfigError("GATEWAY_WEBHOOK_BACKOFF_SECONDS must be positive")
