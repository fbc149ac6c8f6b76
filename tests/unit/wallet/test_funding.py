"""Card and points top-ups: one funding path, with in-memory ports."""

from __future__ import annotations

import uuid

import pytest

from services.runtime.errors import FailedPrecondition, Unavailable
from services.wallet.use_cases.top_ups import fund
from tests.unit.wallet.fakes import FakeTopUpLedger, OutsideParty

WALLET = uuid.uuid4()
CARD = uuid.uuid4()


async def top_up(
    ledger: FakeTopUpLedger, party: OutsideParty, amount: int, *, card: bool, key: str = "k1"
) -> dict[str, object]:
    return await fund(
        ledger,
        party,
        wallet_id=WALLET,
        amount=amount,
        session_id="s",
        idempotency_key=key,
        request_hash=f"{card}:{amount}",
        funding_source_id=CARD if card else None,
    )


@pytest.mark.parametrize(("card", "channel"), [(True, "card"), (False, "points")])
async def test_a_top_up_takes_the_money_outside_then_posts_it_on_its_channel(
    card: bool, channel: str
) -> None:
    ledger, party = FakeTopUpLedger(), OutsideParty()

    result = await top_up(ledger, party, 2_000, card=card)

    assert result["channel"] == channel
    assert result["balance_after"] == 2_000
    assert list(party.taken.values()) == [2_000]


@pytest.mark.parametrize(
    ("card", "reason"), [(True, "CARD_DECLINED"), (False, "INSUFFICIENT_POINTS")]
)
async def test_a_refusal_frees_the_reservation_and_says_why_for_its_channel(
    card: bool, reason: str
) -> None:
    ledger, party = FakeTopUpLedger(), OutsideParty()
    party.refuse_with = "insufficient_funds"

    with pytest.raises(FailedPrecondition) as refused:
        await top_up(ledger, party, 2_000, card=card)

    assert refused.value.reason == reason
    assert ledger.reservations == {}
    assert ledger.posted == []


@pytest.mark.parametrize(
    ("card", "reason"), [(True, "PROCESSOR_UNAVAILABLE"), (False, "POINTS_UNAVAILABLE")]
)
async def test_a_lost_answer_keeps_the_reservation_and_the_retry_takes_the_money_once(
    card: bool, reason: str
) -> None:
    ledger, party = FakeTopUpLedger(), OutsideParty()
    party.lose_next_answer = True

    with pytest.raises(Unavailable) as lost:
        await top_up(ledger, party, 3_000, card=card)
    assert lost.value.reason == reason
    assert ledger.posted == []

    result = await top_up(ledger, party, 3_000, card=card)
    again = await top_up(ledger, party, 3_000, card=card)

    # The retry asked again under the reservation's key: the money moved once.
    assert list(party.taken.values()) == [3_000]
    assert len(ledger.posted) == 1
    assert again == result
