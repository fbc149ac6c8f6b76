"""What happened after a decision, as identity and wallet report it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

FAILURES = frozenset({"password_wrong", "second_factor_failed"})

# Outcomes that update stored state besides being stored; any other outcome is a single
# INSERT, atomic on its own, so it needs no BEGIN and COMMIT round trips (every
# captured payment, every right password and every failure is one of those: failures
# are counted in memory and reach the counters with the next flush).
SIGNAL_OUTCOMES = frozenset({"login_succeeded", "credential_changed", "top_up_completed"})

MONEY_OUTCOMES = frozenset({"top_up_completed", "payment_captured", "payment_refunded"})
SIGN_IN_OUTCOMES = frozenset({"password_wrong", "second_factor_failed", "login_succeeded"})
ACCOUNT_OUTCOMES = frozenset({"login_succeeded", "credential_changed", "password_ok"})


@dataclass(frozen=True)
class OutcomeEvent:
    """An outcome as reported (the IP normalised), with where the IP is."""

    outcome: str
    decision_id: str
    account_id: str
    wallet_id: str
    payer_id: str
    session_id: str
    ip: str
    device_id: str
    amount_minor: int
    currency: str
    movement_id: str
    identifier_hash: str
    occurred_at: datetime
    # How many failed sign-ins the report stands for: identity samples the attempts
    # it refuses before asking risk, each report carrying the ones left out.
    represents: int = 1
    # Derived from the IP by risk, not reported.
    subnet: str = ""
    country: str = ""
