"""The errors identity's rules answer with, the same whoever asks."""

from __future__ import annotations

from services.runtime.errors import FailedPrecondition, Unauthenticated


def invalid_credentials() -> Unauthenticated:
    return Unauthenticated("INVALID_CREDENTIALS", "invalid credentials")


def session_ended() -> Unauthenticated:
    return Unauthenticated("SESSION_ENDED", "the session has ended; sign in again")


def invalid_code() -> FailedPrecondition:
    return FailedPrecondition("CODE_INVALID", "the code is wrong or has expired")
