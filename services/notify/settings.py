"""Configuration of the notify service, read once from the environment."""

from __future__ import annotations

import dataclasses
from typing import ClassVar
from urllib.parse import urlsplit

from services.runtime.config import ConfigError, Secret, ServiceSettings, env


@dataclasses.dataclass(frozen=True, kw_only=True)
class NotifySettings(ServiceSettings):
    env_prefix: ClassVar[str] = "NOTIFY"
    default_grpc_port: ClassVar[int] = 50054
    default_health_port: ClassVar[int] = 50064
    default_metrics_port: ClassVar[int] = 9464

    smtp_host: str = env("SMTP_HOST", default="127.0.0.1", help="SMTP relay host")
    smtp_port: int = env("SMTP_PORT", default=2525, help="SMTP relay port")
    smtp_starttls: bool = env(
        "SMTP_STARTTLS", default=False, help="upgrade the SMTP connection with STARTTLS"
    )
    smtp_username: str = env("SMTP_USERNAME", default="", help="SMTP AUTH user; empty = no AUTH")
    smtp_password: Secret | None = env("SMTP_PASSWORD", default=None, help="SMTP AUTH password")
    smtp_fallback_relays: tuple[str, ...] = env(
        "NOTIFY_SMTP_FALLBACK_RELAYS",
        default=(),
        help="comma-separated host:port relays tried in order when the main relay fails",
    )
    smtp_timeout_seconds: float = env(
        "NOTIFY_SMTP_TIMEOUT_SECONDS", default=10.0, help="timeout of one SMTP conversation"
    )
    mail_from: str = env(
        "NOTIFY_MAIL_FROM",
        default="Mamoru <no-reply@mamoru.local>",
        help="From header and envelope sender of every email",
    )
    sms_endpoints: tuple[str, ...] = env(
        "NOTIFY_SMS_ENDPOINTS",
        default=(),
        help="comma-separated HTTP(S) URLs of SMS providers, tried in order",
    )
    sms_api_key: Secret | None = env(
        "NOTIFY_SMS_API_KEY", default=None, help="bearer key sent to the SMS providers"
    )
    push_endpoints: tuple[str, ...] = env(
        "NOTIFY_PUSH_ENDPOINTS",
        default=(),
        help="comma-separated HTTP(S) URLs of push providers, tried in order",
    )
    push_api_key: Secret | None = env(
        "NOTIFY_PUSH_API_KEY", default=None, help="bearer key sent to the push providers"
    )
    operator_emails: tuple[str, ...] = env(
        "NOTIFY_OPERATOR_EMAILS",
        default=("operators@mamoru.local",),
        help="comma-separated addresses that receive risk's operator alerts",
    )
    link_base_url: str = env(
        "NOTIFY_LINK_BASE_URL",
        default="http://127.0.0.1:8080",
        help="base URL of the links in messages (reset, 'this wasn't me', freeze)",
    )
    max_attempts: int = env(
        "NOTIFY_MAX_ATTEMPTS", default=8, help="attempts before a delivery is dead-lettered"
    )
    retry_base_seconds: float = env(
        "NOTIFY_RETRY_BASE_SECONDS", default=2.0, help="first retry delay; doubles per attempt"
    )
    retry_max_seconds: float = env(
        "NOTIFY_RETRY_MAX_SECONDS", default=900.0, help="longest delay between two attempts"
    )
    lease_seconds: float = env(
        "NOTIFY_LEASE_SECONDS",
        default=60.0,
        help="how long a claimed delivery is held before another worker may take it",
    )
    poll_seconds: float = env(
        "NOTIFY_POLL_SECONDS", default=1.0, help="how often the worker looks for due deliveries"
    )
    batch_linger_seconds: float = env(
        "NOTIFY_BATCH_LINGER_SECONDS",
        default=0.2,
        help="how long the worker waits after a notice is accepted for more to send together",
    )
    kept_contacts: int = env(
        "NOTIFY_KEPT_CONTACTS",
        default=50_000,
        help="accounts whose contacts are kept for money notices until identity announces a change",
    )
    coalesce_limit: int = env(
        "NOTIFY_COALESCE_LIMIT",
        default=3,
        help="reset-type notices per account and kind sent within the window; more are coalesced",
    )
    coalesce_window_seconds: float = env(
        "NOTIFY_COALESCE_WINDOW_SECONDS", default=900.0, help="window of NOTIFY_COALESCE_LIMIT"
    )

    def validate(self) -> None:
        super().validate()
        if not 0 < self.smtp_port <= 65535:
            raise ConfigError("SMTP_PORT must be between 1 and 65535")
        if self.smtp_password is not None and not self.smtp_username:
            raise ConfigError("SMTP_USERNAME is required when SMTP_PASSWORD is set")
        for relay in self.smtp_fallback_relays:
            host, _, port = relay.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) <= 65535:
                raise ConfigError(f"NOTIFY_SMTP_FALLBACK_RELAYS entry {relay!r} must be host:port")
        for name, urls, key in (
            ("NOTIFY_SMS_ENDPOINTS", self.sms_endpoints, self.sms_api_key),
            ("NOTIFY_PUSH_ENDPOINTS", self.push_endpoints, self.push_api_key),
        ):
            for url in urls:
                if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                    raise ConfigError(f"{name} entry {url!r} must be an http(s) URL")
            if urls and key is None:
                key_name = name.replace("ENDPOINTS", "API_KEY")
                raise ConfigError(f"{key_name} is required when {name} is set")
        if not self.operator_emails:
            raise ConfigError("NOTIFY_OPERATOR_EMAILS must name at least one address")
        if any("@" not in address for address in self.operator_emails):
            raise ConfigError("NOTIFY_OPERATOR_EMAILS must be email addresses")
        if urlsplit(self.link_base_url).scheme not in ("http", "https"):
            raise ConfigError("NOTIFY_LINK_BASE_URL must be an http(s) URL")
        if self.max_attempts < 1:
            raise ConfigError("NOTIFY_MAX_ATTEMPTS must be at least 1")
        if not 0 < self.retry_base_seconds <= self.retry_max_seconds:
            raise ConfigError(
                "NOTIFY_RETRY_BASE_SECONDS must be positive and at most NOTIFY_RETRY_MAX_SECONDS"
            )
        if self.lease_seconds <= self.smtp_timeout_seconds:
            raise ConfigError("NOTIFY_LEASE_SECONDS must exceed NOTIFY_SMTP_TIMEOUT_SECONDS")
        if self.poll_seconds <= 0:
            raise ConfigError("NOTIFY_POLL_SECONDS must be positive")
        if not 0 <= self.batch_linger_seconds <= 5:
            raise ConfigError("NOTIFY_BATCH_LINGER_SECONDS must be between 0 and 5")
        if self.kept_contacts < 1:
            raise ConfigError("NOTIFY_KEPT_CONTACTS must be at least 1")
        if self.coalesce_limit < 1:
            raise ConfigError("NOTIFY_COALESCE_LIMIT must be at least 1")
        if self.coalesce_window_seconds <= 0:
            raise ConfigError("NOTIFY_COALESCE_WINDOW_SECONDS must be positive")
