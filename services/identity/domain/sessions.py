"""Sessions, challenges and codes: how long each lives, and what a session is issued."""

from __future__ import annotations

import enum
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


def is_live(*, revoked_at: datetime | None, expires_at: datetime, now: datetime) -> bool:
    """Whether a stored session still stands: neither revoked nor past its end."""
    return revoked_at is None and expires_at >= now


def is_recent(auth_time: datetime, now: datetime) -> bool:
    """Whether a session's last authentication is recent enough for a sensitive action."""
    return auth_time >= now - STEP_UP_WINDOW


class Refresh(enum.Enum):
    """What presenting a refresh token does."""

    # The token names no live session: sign in again.
    ENDED = "ended"
    # Two holders: the token was spent before, or comes without its session's device.
    REUSED = "reused"
    # The honest case: the token is spent and a new one issued.
    ROTATE = "rotate"


@dataclass(frozen=True)
class PresentedRefresh:
    """A refresh token as stored, looked up by the one presented."""

    session_device: str
    revoked_at: datetime | None
    expires_at: datetime
    spent_at: datetime | None


def refresh_outcome(token: PresentedRefresh | None, *, device: str, now: datetime) -> Refresh:
    """A spent token shown again, or shown without its session's device key, means two
    holders, so the whole family ends rather than only the copy being refused."""
    if token is None or not is_live(
        revoked_at=token.revoked_at, expires_at=token.expires_at, now=now
    ):
        return Refresh.ENDED
    if token.spent_at is not None or token.session_device != device:
        return Refresh.REUSED
    return Refresh.ROTATE
