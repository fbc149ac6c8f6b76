"""Configuration of the risk service, read once from the environment."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from services.runtime.config import ConfigError, ServiceSettings, env


@dataclasses.dataclass(frozen=True, kw_only=True)
class RiskSettings(ServiceSettings):
    env_prefix: ClassVar[str] = "RISK"
    default_grpc_port: ClassVar[int] = 50053
    default_health_port: ClassVar[int] = 50063
    default_metrics_port: ClassVar[int] = 9463

    geoip_database: Path | None = env(
        "RISK_GEOIP_DATABASE",
        default=None,
        help="MaxMind-format country database (.mmdb); unset = the bundled iptocc data",
    )
    home_countries: tuple[str, ...] = env(
        "RISK_HOME_COUNTRIES",
        default=("JP",),
        help="comma-separated ISO 3166 countries whose sign-ins are not 'foreign' for alerts",
    )
    policy_poll_seconds: float = env(
        "RISK_POLICY_POLL_SECONDS",
        default=0.5,
        help="how often each replica reads the policy version, so changes made on another "
        "replica reach its WatchPolicies subscribers",
    )
    decision_flush_seconds: float = env(
        "RISK_DECISION_FLUSH_SECONDS",
        default=0.002,
        help="how long the first decision of a batch waits for others before the batch is "
        "stored (each assessment answers once its decision is stored)",
    )
    counter_sync_seconds: float = env(
        "RISK_COUNTER_SYNC_SECONDS",
        default=1.0,
        help="how often each replica adds its counts to the shared counters and reads the "
        "other replicas' (a replica that dies loses at most this much of its counts)",
    )
    alert_interval_seconds: float = env(
        "RISK_ALERT_INTERVAL_SECONDS",
        default=10.0,
        help="how often the aggregate alert rules are evaluated",
    )
    stuffing_watch_seconds: float = env(
        "RISK_STUFFING_WATCH_SECONDS",
        default=1.0,
        help="how often the stuffing-wave rule is evaluated and its containment kept",
    )

    def validate(self) -> None:
        super().validate()
        if self.geoip_database is not None and not self.geoip_database.is_file():
            raise ConfigError("RISK_GEOIP_DATABASE must name an existing .mmdb file")
        for code in self.home_countries:
            if len(code) != 2 or not code.isalpha() or not code.isupper():
                raise ConfigError("RISK_HOME_COUNTRIES must be upper-case ISO 3166 codes")
        for name, value in (
            ("RISK_POLICY_POLL_SECONDS", self.policy_poll_seconds),
            ("RISK_DECISION_FLUSH_SECONDS", self.decision_flush_seconds),
            ("RISK_COUNTER_SYNC_SECONDS", self.counter_sync_seconds),
            ("RISK_ALERT_INTERVAL_SECONDS", self.alert_interval_seconds),
            ("RISK_STUFFING_WATCH_SECONDS", self.stuffing_watch_seconds),
        ):
            if not 0 < value <= 3600:
                raise ConfigError(f"{name} must be greater than 0 and at most 3600")
