"""Sessions, challenges and codes: how long each lives, and what a session is issued."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

GROUP_AUDIENCE = "group"


WALLET_AUDIENCE = "wallet"


CODE_LIFETIME = timedelta(minutes=15)


CHALLENGE_LIFETIME = timedelta(minutes=5)


RESET_LIFETIME = timedelta(minutes=30)


# While an unused link is younger than this, a new request mints no other; it matches
# notify's window for coalescing reset notices (NOTIFY_COALESCE_WINDOW_SECONDS).
RESET_REISSUE_AFTER = timedelta(minutes=15)


FREEZE_LIFETIME = timedelta(days=7)


# Sensitive actions need an authentication at most this old.
STEP_UP_WINDOW = timedelta(minutes=10)


CODE_ATTEMPTS = 5


RECOVERY_CODE_COUNT = 10


TOTP_STEP_SECONDS = 30


@dataclass(frozen=True)
class IssuedSession:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    session_id: uuid.UUID
    assurance_level: int


@dataclass(frozen=True)
class PendingChallenge:
    challenge_id: uuid.UUID
    methods: tuple[str, ...]


# A request that proved no device key is recorded by the label it sent, marked so
# that no label can pass for a key's thumbprint (base64url, never a colon).
UNPROVEN = "unproven:"


def device_key_of(ref: str) -> str | None:
    """The key thumbprint a recorded device stands for; None for a mere label."""
    return ref if ref and not ref.startswith(UNPROVEN) else None
