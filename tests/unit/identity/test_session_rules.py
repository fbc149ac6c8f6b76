"""The rules a stored session answers to: when it stands, when it may act without a
step-up, and what presenting a refresh token does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.identity.domain.sessions import (
    PresentedRefresh,
    Refresh,
    is_live,
    is_recent,
    refresh_outcome,
)

NOW = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def token(**overrides: object) -> PresentedRefresh:
    fields: dict[str, object] = {
        "session_device": "phone-key",
        "revoked_at": None,
        "expires_at": NOW + timedelta(days=30),
        "spent_at": None,
        **overrides,
    }
    return PresentedRefresh(**fields)  # type: ignore[arg-type]


def test_a_fresh_token_from_its_sessions_device_rotates():
    assert refresh_outcome(token(), device="phone-key", now=NOW) is Refresh.ROTATE


def test_an_unknown_revoked_or_expired_token_ends_the_session_without_more():
    assert refresh_outcome(None, device="phone-key", now=NOW) is Refresh.ENDED
    revoked = token(revoked_at=NOW - timedelta(minutes=1))
    assert refresh_outcome(revoked, device="phone-key", now=NOW) is Refresh.ENDED
    expired = token(expires_at=NOW - timedelta(seconds=1))
    assert refresh_outcome(expired, device="phone-key", now=NOW) is Refresh.ENDED


def test_a_spent_token_shown_again_is_a_second_holder():
    spent = token(spent_at=NOW - timedelta(seconds=5))
    assert refresh_outcome(spent, device="phone-key", now=NOW) is Refresh.REUSED


def test_a_token_shown_without_its_sessions_device_key_is_a_second_holder():
    assert refresh_outcome(token(), device="unproven:phone", now=NOW) is Refresh.REUSED


def test_a_session_stands_until_revoked_or_past_its_end():
    assert is_live(revoked_at=None, expires_at=NOW, now=NOW)
    assert not is_live(revoked_at=None, expires_at=NOW - timedelta(seconds=1), now=NOW)
    assert not is_live(revoked_at=NOW, expires_at=NOW + timedelta(days=1), now=NOW)


def test_a_sensitive_action_needs_an_authentication_at_most_ten_minutes_old():
    assert is_recent(NOW - timedelta(minutes=10), NOW)
    assert not is_recent(NOW - timedelta(minutes=10, seconds=1), NOW)
