"""Counting windows: events are counted in buckets of a few seconds, and a rule's
window is the run of buckets that ends with the current one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.risk.domain.rules import RuleBook

BUCKET_SECONDS = 10


def bucket_of(moment: datetime) -> int:
    return int(moment.timestamp()) // BUCKET_SECONDS


def window_start(now: datetime, seconds: float) -> int:
    """The first bucket inside a window ending now (the current bucket counts)."""
    return bucket_of(now) - max(int(seconds) // BUCKET_SECONDS - 1, 0)


@dataclass(frozen=True)
class LoginWindows:
    """First bucket of each sign-in rule's window, and the bucket of this attempt."""

    ip: int
    subnet: int
    account: int
    distinct: int
    device_distinct: int
    global_failures: int
    unknown_share: int
    bucket: int

    @classmethod
    def of(cls, now: datetime, rules: RuleBook) -> LoginWindows:
        return cls(
            ip=window_start(now, rules.window("login.ip_failures")),
            subnet=window_start(now, rules.window("login.subnet_failures")),
            account=window_start(now, rules.window("login.account_failures")),
            distinct=window_start(now, rules.window("login.ip_distinct_accounts")),
            device_distinct=window_start(now, rules.window("login.device_distinct_accounts")),
            global_failures=window_start(now, rules.window("login.global_failures")),
            unknown_share=window_start(now, rules.window("login.unknown_identifier_share")),
            bucket=bucket_of(now),
        )
