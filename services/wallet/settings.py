"""Configuration of the wallet service, read once from the environment."""

from __future__ import annotations

import dataclasses
import zoneinfo
from typing import ClassVar

from services.runtime.config import ConfigError, ServiceSettings, env
from services.wallet.domain.codes import MAX_PAYMENT_CODE_SECONDS
from services.wallet.domain.limits import Limits


@dataclasses.dataclass(frozen=True, kw_only=True)
class WalletSettings(ServiceSettings):
    env_prefix: ClassVar[str] = "WALLET"
    default_grpc_port: ClassVar[int] = 50052
    default_health_port: ClassVar[int] = 50062
    default_metrics_port: ClassVar[int] = 9462

    processor_url: str = env(
        "WALLET_PROCESSOR_URL",
        default="http://127.0.0.1:8089",
        help="base URL of the card processor (the sandbox one locally)",
    )
    processor_timeout_seconds: float = env(
        "WALLET_PROCESSOR_TIMEOUT_SECONDS",
        default=5.0,
        help="how long a processor call may take before it counts as failed",
    )
    points_url: str = env(
        "WALLET_POINTS_URL",
        default="http://127.0.0.1:8090",
        help="base URL of the group's loyalty program (the sandbox one locally)",
    )
    points_timeout_seconds: float = env(
        "WALLET_POINTS_TIMEOUT_SECONDS",
        default=5.0,
        help="how long a points redemption may take before it counts as failed",
    )
    risk_timeout_seconds: float = env(
        "WALLET_RISK_TIMEOUT_SECONDS",
        default=0.5,
        help="how long an assessment may take before the fallback applies",
    )
    limit_per_top_up: int = env("WALLET_LIMIT_PER_TOP_UP", default=50_000, help="JPY per top-up")
    limit_day_amount: int = env("WALLET_LIMIT_DAY_AMOUNT", default=100_000, help="JPY per day")
    limit_day_count: int = env("WALLET_LIMIT_DAY_COUNT", default=5, help="top-ups per day")
    limit_month_amount: int = env(
        "WALLET_LIMIT_MONTH_AMOUNT", default=300_000, help="JPY per calendar month"
    )
    balance_cap: int = env("WALLET_BALANCE_CAP", default=500_000, help="largest balance, JPY")
    new_wallet_days: int = env(
        "WALLET_NEW_WALLET_DAYS", default=7, help="days a wallet counts as new"
    )
    new_wallet_day_amount: int = env(
        "WALLET_NEW_WALLET_DAY_AMOUNT", default=30_000, help="JPY per day for a new wallet"
    )
    new_source_per_top_up: int = env(
        "WALLET_NEW_SOURCE_PER_TOP_UP",
        default=10_000,
        help="largest first top-up from a newly registered card, JPY",
    )
    new_source_max_auth_age_seconds: int = env(
        "WALLET_NEW_SOURCE_MAX_AUTH_AGE_SECONDS",
        default=300,
        help="a new card's first top-up needs a sign-in or step-up this recent",
    )
    payout_max_auth_age_seconds: int = env(
        "WALLET_PAYOUT_MAX_AUTH_AGE_SECONDS",
        default=300,
        help="setting the payout bank account or claiming a payout needs a sign-in this recent",
    )
    enroll_max_auth_age_seconds: int = env(
        "WALLET_ENROLL_MAX_AUTH_AGE_SECONDS",
        default=600,
        help="enrolling needs a sign-in or step-up this recent",
    )
    payment_code_seconds: int = env(
        "WALLET_PAYMENT_CODE_SECONDS", default=120, help="life of a payment code (at most 300)"
    )
    cash_code_seconds: int = env(
        "WALLET_CASH_CODE_SECONDS", default=600, help="life of a cash top-up code"
    )
    hold_seconds: int = env(
        "WALLET_HOLD_SECONDS", default=900, help="how long an authorization holds money"
    )
    timezone: str = env(
        "WALLET_TIMEZONE", default="Asia/Tokyo", help="where days and months of limits begin"
    )

    def limits(self) -> Limits:
        return Limits(
            per_top_up=self.limit_per_top_up,
            day_amount=self.limit_day_amount,
            day_count=self.limit_day_count,
            month_amount=self.limit_month_amount,
            balance_cap=self.balance_cap,
            new_wallet_days=self.new_wallet_days,
            new_wallet_day_amount=self.new_wallet_day_amount,
            new_source_per_top_up=self.new_source_per_top_up,
        )

    def validate(self) -> None:
        super().validate()
        if not self.processor_url.startswith(("http://", "https://")):
            raise ConfigError("WALLET_PROCESSOR_URL must be an http:// or https:// URL")
        if not self.points_url.startswith(("http://", "https://")):
            raise ConfigError("WALLET_POINTS_URL must be an http:// or https:// URL")
        if not 0 < self.payment_code_seconds <= MAX_PAYMENT_CODE_SECONDS:
            raise ConfigError(
                f"WALLET_PAYMENT_CODE_SECONDS must be between 1 and {MAX_PAYMENT_CODE_SECONDS}"
            )
        for name, value in (
            ("WALLET_LIMIT_PER_TOP_UP", self.limit_per_top_up),
            ("WALLET_LIMIT_DAY_AMOUNT", self.limit_day_amount),
            ("WALLET_LIMIT_DAY_COUNT", self.limit_day_count),
            ("WALLET_LIMIT_MONTH_AMOUNT", self.limit_month_amount),
            ("WALLET_BALANCE_CAP", self.balance_cap),
            ("WALLET_NEW_WALLET_DAY_AMOUNT", self.new_wallet_day_amount),
            ("WALLET_NEW_SOURCE_PER_TOP_UP", self.new_source_per_top_up),
            ("WALLET_CASH_CODE_SECONDS", self.cash_code_seconds),
            ("WALLET_HOLD_SECONDS", self.hold_seconds),
            ("WALLET_PAYOUT_MAX_AUTH_AGE_SECONDS", self.payout_max_auth_age_seconds),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be greater than 0")
        if self.new_wallet_days < 0:
            raise ConfigError("WALLET_NEW_WALLET_DAYS must not be negative")
        if self.processor_timeout_seconds <= 0:
            raise ConfigError("WALLET_PROCESSOR_TIMEOUT_SECONDS must be greater than 0")
        if self.points_timeout_seconds <= 0:
            raise ConfigError("WALLET_POINTS_TIMEOUT_SECONDS must be greater than 0")
        if self.risk_timeout_seconds <= 0:
            raise ConfigError("WALLET_RISK_TIMEOUT_SECONDS must be greater than 0")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                "WALLET_TIMEZONE must be an IANA time zone such as Asia/Tokyo"
            ) from None
