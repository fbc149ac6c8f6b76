"""Top-ups from outside parties (the card processor, the loyalty program).

Both take money from outside before the wallet is credited, so both run the same
way: reserve under the limits, ask the outside party, post. A refusal frees the
reservation; no answer keeps it, so a retry with the same key completes it
instead of taking the money twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.runtime.errors import DomainError, FailedPrecondition, Unavailable


@dataclass(frozen=True)
class PendingTopUp:
    """A top-up reserved under the limits, waiting for the outside party."""

    top_up_id: uuid.UUID
    channel: str
    amount: int
    # What the outside party knows the payer's money by: the card's processor
    # token, or for points the wallet's payer ID (the program's member ID).
    source: str

    @property
    def idempotency_key(self) -> str:
        """The outside party's key: a retry after a lost answer cannot take money twice."""
        return f"top_up:{self.top_up_id}"


@dataclass(frozen=True)
class VerifiedCard:
    """A card that passed 3-D Secure, as the processor describes it."""

    brand: str
    last4: str


class FundingRefused(Exception):
    """The outside party refused for good; ``reason`` is its error code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FundingUnavailable(Exception):
    """No definitive answer: the money may have moved; retry with the same key."""


def refusal(channel: str, error: FundingRefused) -> DomainError:
    if channel == "points":
        # An unknown member and a short balance read the same to the caller.
        return FailedPrecondition(
            "INSUFFICIENT_POINTS", "there are not enough points for this top-up"
        )
    return FailedPrecondition(
        "CARD_DECLINED", "the card was declined", metadata={"processor": error.reason}
    )


def no_answer(channel: str) -> DomainError:
    if channel == "points":
        return Unavailable(
            "POINTS_UNAVAILABLE", "the points program did not answer; retry with the same key"
        )
    return Unavailable(
        "PROCESSOR_UNAVAILABLE", "the card processor did not answer; retry with the same key"
    )
