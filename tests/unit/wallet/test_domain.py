"""The wallet's pure rules: limits, codes, compensation, and who may call person RPCs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.runtime.access import admitted_as
from services.runtime.errors import FailedPrecondition, PermissionDenied
from services.runtime.tokens import TokenClaims
from services.wallet.api.callers import payer_claims
from services.wallet.domain.codes import fingerprint, is_numeric_code, new_numeric_code
from services.wallet.domain.compensation import (
    UnauthorizedMovement,
    method_for,
    settlement_order,
    split_reversal,
)
from services.wallet.domain.limits import Limits, TopUpUsage, broken_limit, room
from services.wallet.domain.wallets import require_recent_auth

LIMITS = Limits(
    per_top_up=50_000,
    day_amount=100_000,
    day_count=3,
    month_amount=300_000,
    balance_cap=200_000,
    new_wallet_days=7,
    new_wallet_day_amount=30_000,
    new_source_per_top_up=10_000,
)
NOTHING_USED = TopUpUsage(day_amount=0, day_count=0, month_amount=0, balance=0)


def test_the_incident_top_up_of_100000_yen_breaks_the_per_top_up_limit() -> None:
    assert broken_limit(LIMITS, NOTHING_USED, 100_000, new_wallet=False, new_source=False) == (
        "per_top_up"
    )


def test_a_new_card_and_a_new_wallet_get_the_lower_limits() -> None:
    assert broken_limit(LIMITS, NOTHING_USED, 10_001, new_wallet=False, new_source=True) == (
        "new_source_per_top_up"
    )
    used = TopUpUsage(day_amount=25_000, day_count=1, month_amount=25_000, balance=25_000)
    assert broken_limit(LIMITS, used, 6_000, new_wallet=True, new_source=False) == (
        "new_wallet_day_amount"
    )
    assert broken_limit(LIMITS, used, 5_000, new_wallet=True, new_source=False) is None


def test_each_limit_names_itself_when_broken() -> None:
    assert broken_limit(LIMITS, TopUpUsage(0, 3, 0, 0), 1, new_wallet=False, new_source=False) == (
        "day_count"
    )
    assert broken_limit(
        LIMITS, TopUpUsage(0, 0, 299_999, 0), 2, new_wallet=False, new_source=False
    ) == ("month_amount")
    assert broken_limit(
        LIMITS, TopUpUsage(0, 0, 0, 199_999), 2, new_wallet=False, new_source=False
    ) == ("balance_cap")


def test_room_never_goes_below_zero_and_reports_the_largest_top_up() -> None:
    left = room(
        LIMITS, TopUpUsage(150_000, 5, 400_000, 250_000), new_wallet=False, new_source=False
    )
    assert (left.day_amount, left.day_count, left.month_amount, left.balance_room) == (0, 0, 0, 0)
    assert left.largest_top_up == 0
    fresh = room(LIMITS, NOTHING_USED, new_wallet=False, new_source=False)
    assert fresh.largest_top_up == 50_000


def test_codes_are_twenty_digits_and_differ() -> None:
    codes = {new_numeric_code() for _ in range(100)}
    assert len(codes) == 100
    assert all(is_numeric_code(code) for code in codes)
    full_width_digits = "".join(chr(0xFF10 + i % 10) for i in range(20))
    assert not is_numeric_code(full_width_digits)


def test_a_fingerprint_ignores_field_order_but_not_values() -> None:
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_card_top_ups_go_back_to_the_card_and_payments_to_the_wallet() -> None:
    card = UnauthorizedMovement("m1", "w", "top_up", 100, card_charge=True)
    cash = UnauthorizedMovement("m2", "w", "top_up", 100, card_charge=False)
    payment = UnauthorizedMovement("m3", "w", "payment", 100, card_charge=False)
    assert (method_for(card), method_for(cash), method_for(payment)) == (
        "card_refund",
        None,
        "wallet_credit",
    )
    assert settlement_order([card, payment])[0] is payment


def test_a_reversal_takes_what_the_wallet_holds_and_the_compensation_account_the_rest() -> None:
    assert split_reversal(10_000, 2_500) == (2_500, 7_500)
    assert split_reversal(10_000, 50_000) == (10_000, 0)
    assert split_reversal(10_000, 0) == (0, 10_000)


def claims(**overrides: Any) -> TokenClaims:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "subject": "payer-1",
        "audience": "wallet",
        "issuer": "mamoru-identity",
        "session_id": "s1",
        "device_key": "d1",
        "methods": ("pwd", "otp"),
        "assurance_level": 2,
        "auth_time": now,
        "issued_at": now,
        "expires_at": now + timedelta(minutes=10),
        "token_id": "t1",
        "raw": {},
    }
    values.update(overrides)
    return TokenClaims(**values)


def payer_claims_of(token: TokenClaims) -> TokenClaims:
    with admitted_as("gateway", token):
        return payer_claims()


def test_a_group_id_token_is_refused_with_a_reason() -> None:
    with pytest.raises(PermissionDenied) as refused:
        payer_claims_of(claims(audience="group"))
    assert refused.value.reason == "WALLET_AUDIENCE_REQUIRED"


def test_a_wallet_token_without_a_second_factor_or_a_device_is_refused() -> None:
    with pytest.raises(PermissionDenied, match="second factor"):
        payer_claims_of(claims(assurance_level=1))
    with pytest.raises(PermissionDenied, match="registered device"):
        payer_claims_of(claims(device_key=None))
    assert payer_claims_of(claims()).subject == "payer-1"


def test_an_old_sign_in_must_step_up_before_a_sensitive_operation() -> None:
    stale = claims(auth_time=datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(FailedPrecondition) as refused:
        require_recent_auth(stale, 300)
    assert refused.value.reason == "STEP_UP_REQUIRED"
    require_recent_auth(claims(), 300)


def test_settings_refuse_a_payment_code_living_longer_than_five_minutes() -> None:
    from services.runtime.config import ConfigError, load_settings
    from services.wallet.settings import WalletSettings

    base = {"DATABASE_URL": "postgresql://localhost/wallet"}
    assert load_settings(WalletSettings, base).payment_code_seconds <= 300
    with pytest.raises(ConfigError, match="WALLET_PAYMENT_CODE_SECONDS"):
        load_settings(WalletSettings, {**base, "WALLET_PAYMENT_CODE_SECONDS": "301"})
    with pytest.raises(ConfigError, match="WALLET_TIMEZONE"):
        load_settings(WalletSettings, {**base, "WALLET_TIMEZONE": "Mars/Olympus"})


def test_top_ups_in_flight_take_room_under_the_balance_cap() -> None:
    in_flight = TopUpUsage(
        day_amount=20_000, day_count=1, month_amount=20_000, balance=185_000, pending=10_000
    )
    assert broken_limit(LIMITS, in_flight, 6_000, new_wallet=False, new_source=False) == (
        "balance_cap"
    )
    assert room(LIMITS, in_flight, new_wallet=False, new_source=False).balance_room == 5_000


def test_a_new_cards_allowance_is_shared_by_its_top_ups_in_flight() -> None:
    in_flight = TopUpUsage(
        day_amount=6_000, day_count=1, month_amount=6_000, balance=0, source_pending=6_000
    )
    assert broken_limit(LIMITS, in_flight, 4_001, new_wallet=False, new_source=True) == (
        "new_source_per_top_up"
    )
    assert broken_limit(LIMITS, in_flight, 4_000, new_wallet=False, new_source=True) is None
    # Once the card is no longer new, its pending top-ups weigh only on the general limits.
    assert broken_limit(LIMITS, in_flight, 20_000, new_wallet=False, new_source=False) is None
