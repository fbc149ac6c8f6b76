"""Settings read once from the environment into a frozen object.

Every service declares a frozen dataclass whose fields carry the name of the
environment variable they come from (``env("IDENTITY_PORT", default=50051)``).
``load_settings`` reads them all, converts by the field's type and stops
start-up with a message naming the variable when one is missing or malformed.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

_MISSING: Any = dataclasses.MISSING
_ENV_KEY = "mamoru_env"
_HELP_KEY = "mamoru_help"


class ConfigError(Exception):
    """A configuration variable is missing or malformed; the message names it."""


class Secret:
    """A secret value whose repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def env(name: str, *, default: Any = _MISSING, help: str = "") -> Any:
    """Declare a settings field read from environment variable ``name``."""
    return dataclasses.field(default=default, metadata={_ENV_KEY: name, _HELP_KEY: help})


T = TypeVar("T")


def load_settings(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from the environment, failing fast on the first bad variable.

    A variable name may contain ``{PREFIX}``, replaced by the class's ``env_prefix``
    (``IDENTITY``, ``WALLET``...), so the shared fields read per-service variables.
    """
    source = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    prefix = getattr(cls, "env_prefix", "")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field.metadata.get(_ENV_KEY)
        if name is None:
            continue
        name = name.replace("{PREFIX}", prefix)
        raw = source.get(name)
        if raw is None or raw == "":
            if field.default is _MISSING:
                raise ConfigError(f"{name} is required but not set")
            continue
        values[field.name] = _convert(name, raw, hints[field.name])
    settings = cls(**values)
    validate = getattr(settings, "validate", None)
    if callable(validate):
        validate()
    return settings


def describe(cls: type[Any]) -> list[tuple[str, str, str]]:
    """(variable, default, help) for every field, for the README and ``--help``."""
    rows = []
    prefix = getattr(cls, "env_prefix", "")
    for field in dataclasses.fields(cls):
        name = field.metadata.get(_ENV_KEY)
        if name is None:
            continue
        name = name.replace("{PREFIX}", prefix)
        default = "(required)" if field.default is _MISSING else repr(field.default)
        rows.append((name, default, field.metadata.get(_HELP_KEY, "")))
    return rows


def _convert(name: str, raw: str, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return _convert(name, raw, options[0])
    if kind is str:
        if any(ord(ch) < 32 for ch in raw):
            raise ConfigError(f"{name} must not contain control characters")
        return raw
    if kind is Secret:
        return Secret(raw)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if kind is Path:
        return Path(raw)
    if origin is tuple:
        (item,) = {arg for arg in typing.get_args(kind) if arg is not Ellipsis}
        return tuple(_convert(name, part.strip(), item) for part in raw.split(",") if part.strip())
    raise ConfigError(f"{name} has an unsupported type {kind!r}")


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """What every service reads; each service subclasses it with its own fields.

    Subclasses set ``env_prefix`` (a ClassVar) so ports read ``IDENTITY_GRPC_PORT`` etc.
    """

    env_prefix: typing.ClassVar[str] = ""
    default_grpc_port: typing.ClassVar[int] = 0
    default_health_port: typing.ClassVar[int] = 0
    default_metrics_port: typing.ClassVar[int] = 0

    database_url: Secret = env("DATABASE_URL", help="PostgreSQL URL of this service's own database")
    grpc_host: str = env("{PREFIX}_GRPC_HOST", default="127.0.0.1", help="interface to bind")
    grpc_port: int = env("{PREFIX}_GRPC_PORT", default=-1, help="mTLS gRPC port (0 = any free)")
    health_port: int = env(
        "{PREFIX}_HEALTH_PORT", default=-1, help="plaintext health-only port (0 = any free)"
    )
    tls_dir: Path = env(
        "MAMORU_TLS_DIR",
        default=Path("var/tls"),
        help="folder with ca.pem and <service>.pem/<service>-key.pem",
    )
    metrics_port: int = env(
        "{PREFIX}_METRICS_PORT",
        default=-1,
        help="plaintext Prometheus /metrics port, on GRPC_HOST (0 = any free)",
    )
    database_direct_url: Secret | None = env(
        "DATABASE_DIRECT_URL",
        default=None,
        help="PostgreSQL URL that bypasses the pooler, for migrations and LISTEN; "
        "unset = DATABASE_URL",
    )
    database_pooler: str = env(
        "DATABASE_POOLER",
        default="auto",
        help="none, transaction (DATABASE_URL is PgBouncer in transaction mode) or auto "
        "(transaction when DATABASE_DIRECT_URL is set and differs)",
    )
    grpc_max_connection_age_seconds: float = env(
        "GRPC_MAX_CONNECTION_AGE_SECONDS",
        default=300.0,
        help="servers close connections older than this so clients rebalance over replicas",
    )
    grpc_max_connection_age_grace_seconds: float = env(
        "GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS",
        default=30.0,
        help="how long RPCs on a closing connection may still run (streams then reconnect)",
    )
    log_format: str = env("LOG_FORMAT", default="auto", help="json, console or auto (by terminal)")
    log_level: str = env("LOG_LEVEL", default="info", help="debug, info, warning or error")
    otlp_endpoint: str = env(
        "OTEL_EXPORTER_OTLP_ENDPOINT", default="", help="OTLP/gRPC collector; unset = no export"
    )
    trace_sample_ratio: float = env(
        "TRACE_SAMPLE_RATIO",
        default=1.0,
        help="share of new traces recorded, 0 to 1; a caller's trace context decides for "
        "its calls (parent-based)",
    )
    outbox_retention_days: int = env(
        "OUTBOX_RETENTION_DAYS",
        default=30,
        help="delivered outbox rows and processed-message records are deleted after this "
        "many days (dead rows are kept for an operator)",
    )
    shutdown_grace_seconds: float = env(
        "{PREFIX}_SHUTDOWN_GRACE_SECONDS",
        default=10.0,
        help="how long in-flight RPCs may run after SIGTERM",
    )
    db_pool_max: int = env("{PREFIX}_DB_POOL_MAX", default=10, help="asyncpg pool size")
    identity_address: str = env(
        "IDENTITY_ADDRESS", default="127.0.0.1:50051", help="host:port of identity (mTLS)"
    )
    wallet_address: str = env(
        "WALLET_ADDRESS",
        default="127.0.0.1:50052",
        help="host:port, list or dns:/// target of wallet (mTLS)",
    )
    risk_address: str = env(
        "RISK_ADDRESS",
        default="127.0.0.1:50053",
        help="host:port, list or dns:/// target of risk (mTLS)",
    )
    notify_address: str = env(
        "NOTIFY_ADDRESS",
        default="127.0.0.1:50054",
        help="host:port, list or dns:/// target of notify (mTLS)",
    )

    def peer_address(self, service: str) -> str:
        return str(getattr(self, f"{service}_address"))

    def behind_transaction_pooler(self) -> bool:
        """Whether DATABASE_URL reaches PostgreSQL through a transaction-mode pooler."""
        if self.database_pooler != "auto":
            return self.database_pooler == "transaction"
        direct = self.database_direct_url
        return direct is not None and direct != self.database_url

    def direct_database_url(self) -> str:
        """The URL for migrations and LISTEN, which need a session of their own."""
        direct = self.database_direct_url or self.database_url
        return direct.reveal()

    def __post_init__(self) -> None:
        # -1 means "the service's documented default port".
        if self.grpc_port == -1:
            object.__setattr__(self, "grpc_port", self.default_grpc_port)
        if self.health_port == -1:
            object.__setattr__(self, "health_port", self.default_health_port)
        if self.metrics_port == -1:
            object.__setattr__(self, "metrics_port", self.default_metrics_port)

    def validate(self) -> None:
        for var, port in (
            ("GRPC_PORT", self.grpc_port),
            ("HEALTH_PORT", self.health_port),
            ("METRICS_PORT", self.metrics_port),
        ):
            if not 0 <= port <= 65535:
                raise ConfigError(f"{self.env_prefix}_{var} must be between 0 and 65535")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError("LOG_FORMAT must be json, console or auto")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("LOG_LEVEL must be debug, info, warning or error")
        if not self.database_url.reveal().startswith(("postgres://", "postgresql://")):
            raise ConfigError("DATABASE_URL must be a postgresql:// URL")
        direct = self.database_direct_url
        if direct is not None and not direct.reveal().startswith(("postgres://", "postgresql://")):
            raise ConfigError("DATABASE_DIRECT_URL must be a postgresql:// URL")
        if self.database_pooler not in ("auto", "none", "transaction"):
            raise ConfigError("DATABASE_POOLER must be none, transaction or auto")
        if self.database_pooler == "transaction" and direct is None:
            # Migrations hold a session lock and LISTEN needs its session: neither
            # survives a pooler that hands the session to another client.
            raise ConfigError("DATABASE_POOLER=transaction needs DATABASE_DIRECT_URL")
        if (
            self.grpc_max_connection_age_seconds <= 0
            or self.grpc_max_connection_age_grace_seconds < 0
        ):
            raise ConfigError(
                "GRPC_MAX_CONNECTION_AGE_SECONDS must be positive and its GRACE not negative"
            )
        if not 0.0 <= self.trace_sample_ratio <= 1.0:
            raise ConfigError("TRACE_SAMPLE_RATIO must be between 0 and 1")
        if self.outbox_retention_days < 1:
            raise ConfigError("OUTBOX_RETENTION_DAYS must be at least 1")
        if self.shutdown_grace_seconds < 0:
            raise ConfigError(f"{self.env_prefix}_SHUTDOWN_GRACE_SECONDS must not be negative")
