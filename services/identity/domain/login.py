"""What a sign-in attempt needs, decided from risk's verdict and what identity knows."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any


class RiskVerdict(enum.Enum):
    ALLOW = "allow"
    CHALLENGE = "challenge"
    THROTTLE = "throttle"
    DENY = "deny"
    # Risk did not answer (down, slow, or not serving the RPC).
    UNAVAILABLE = "unavailable"


# Wrong passwords on an account before its next sign-in needs a second factor.
FAILURES_BEFORE_CHALLENGE = 3
# Wrong answers a pending challenge takes before it is spent.
CHALLENGE_ATTEMPTS = 5


def refuse_before_hashing(verdict: RiskVerdict) -> bool:
    """A deny or throttle ends the attempt before any password hash is computed."""
    return verdict in (RiskVerdict.DENY, RiskVerdict.THROTTLE)


@dataclass(frozen=True)
class SecondFactorNeed:
    required: bool
    reasons: tuple[str, ...]


def second_factor_need(
    *, verdict: RiskVerdict, known_device: bool, recent_failures: int
) -> SecondFactorNeed:
    """After a correct password: does this sign-in need a second factor, and why."""
    reasons = []
    if verdict is RiskVerdict.UNAVAILABLE:
        reasons.append("risk_unavailable")
    if verdict is RiskVerdict.CHALLENGE:
        reasons.append("risk_challenge")
    if not known_device:
        reasons.append("new_device")
    if recent_failures >= FAILURES_BEFORE_CHALLENGE:
        reasons.append("recent_failures")
    return SecondFactorNeed(required=bool(reasons), reasons=tuple(reasons))


def challenge_methods(
    *, has_passkey: bool, has_totp: bool, has_recovery_codes: bool, has_primary_email: bool
) -> list[str]:
    """Factors a challenge accepts, strongest first.

    The inbox code is only for accounts without a passkey or TOTP: it reaches the
    mailbox that also receives resets, so offering it beside a stronger factor would
    let the password and the mailbox get around that factor.
    """
    methods = []
    if has_passkey:
        methods.append("passkey")
    if has_totp:
        methods.append("totp")
    if has_primary_email and not (has_passkey or has_totp):
        methods.append("email_code")
    if has_recovery_codes:
        methods.append("recovery_code")
    return methods


@dataclass(frozen=True)
class FailedSignIn:
    """A wrong (or expired) password, counted after the answer.

    ``account_id`` is None for an identifier that names no account: the attempt is
    queued all the same, so the answer's work does not tell the two apart.
    """

    account_id: uuid.UUID | None
    ip_address: str
    device_id: str
    user_agent: str
    expired_password: bool

    def payload(self) -> dict[str, Any]:
        return {
            "account_id": str(self.account_id) if self.account_id is not None else None,
            "ip_address": self.ip_address,
            "device_id": self.device_id,
            "user_agent": self.user_agent,
            "expired_password": self.expired_password,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> FailedSignIn:
        account_id = payload["account_id"]
        return cls(
            account_id=uuid.UUID(account_id) if account_id is not None else None,
            ip_address=payload["ip_address"],
            device_id=payload["device_id"],
            user_agent=payload["user_agent"],
            expired_password=payload["expired_password"],
        )
