"""The rule deciding, as a notice is accepted, whether it is delivered, coalesced or muted."""

from __future__ import annotations

from typing import Any

import pytest

from services.notify.domain.kinds import Channel, DeliveryStatus, NoticeKind
from services.notify.domain.notices import (
    NewNotice,
    RateLimit,
    counts_recent,
    decide,
    may_be_muted,
)
from services.notify.domain.routing import Recipient

LIMIT = RateLimit(limit=3, window_seconds=900)
ACCOUNT = Recipient(account_id="2f6f2d0e-7a55-4c55-9d5e-5b0d0c6c1a11")
PAYER = Recipient(payer_id="9b1c4c44-1b3f-4b9e-8f0e-0f7b9d2a6e22")


def notice(kind: NoticeKind, recipient: Recipient | None = ACCOUNT, **params: Any) -> NewNotice:
    return NewNotice(
        kind=kind, caller="identity", idempotency_key="k", recipient=recipient, params=params
    )


def test_a_reset_under_the_limit_is_delivered_on_its_planned_channel() -> None:
    decision = decide(notice(NoticeKind.PASSWORD_RESET), recent=2, muted=False, rate_limit=LIMIT)

    assert (decision.coalesced, decision.status) == (False, DeliveryStatus.PENDING)
    assert decision.channels == (Channel.EMAIL,)


@pytest.mark.parametrize("recent", [3, 4, 100])
def test_a_reset_at_or_over_the_limit_is_coalesced(recent: int) -> None:
    decision = decide(
        notice(NoticeKind.PASSWORD_RESET), recent=recent, muted=False, rate_limit=LIMIT
    )

    assert (decision.coalesced, decision.status) == (True, DeliveryStatus.COALESCED)


def test_a_security_notice_is_never_coalesced_however_many_came_before() -> None:
    security = notice(NoticeKind.NEW_DEVICE_SIGN_IN)

    assert not counts_recent(security)
    decision = decide(security, recent=1000, muted=False, rate_limit=LIMIT)
    assert (decision.coalesced, decision.status) == (False, DeliveryStatus.PENDING)
    assert decision.channels == (Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.INBOX)


def test_a_payer_is_rate_limited_like_an_account() -> None:
    assert counts_recent(notice(NoticeKind.SIGN_IN_CODE, PAYER))
    decision = decide(
        notice(NoticeKind.SIGN_IN_CODE, PAYER), recent=3, muted=False, rate_limit=LIMIT
    )
    assert decision.coalesced


def test_muted_news_is_stored_muted_on_every_channel() -> None:
    news = notice(NoticeKind.NEWS)

    assert may_be_muted(news)
    decision = decide(news, recent=0, muted=True, rate_limit=LIMIT)
    assert (decision.coalesced, decision.status) == (False, DeliveryStatus.MUTED)
    assert decision.channels == (Channel.EMAIL, Channel.INBOX)


@pytest.mark.parametrize(
    "kind", [NoticeKind.PAYMENT, NoticeKind.PASSWORD_CHANGED, NoticeKind.SIGN_IN_CODE]
)
def test_security_and_money_notices_cannot_be_muted(kind: NoticeKind) -> None:
    assert not may_be_muted(notice(kind))
    decision = decide(notice(kind), recent=0, muted=True, rate_limit=LIMIT)
    assert decision.status is DeliveryStatus.PENDING


def test_news_to_a_payer_without_an_account_is_not_muted() -> None:
    assert not may_be_muted(notice(NoticeKind.NEWS, PAYER))
    decision = decide(notice(NoticeKind.NEWS, PAYER), recent=0, muted=True, rate_limit=LIMIT)
    assert decision.status is DeliveryStatus.PENDING


def test_an_operator_alert_has_no_recipient_and_is_always_delivered_by_email() -> None:
    alert = notice(NoticeKind.OPERATOR_ALERT, None)

    assert not counts_recent(alert) and not may_be_muted(alert)
    decision = decide(alert, recent=99, muted=True, rate_limit=LIMIT)
    assert (decision.status, decision.channels) == (DeliveryStatus.PENDING, (Channel.EMAIL,))
