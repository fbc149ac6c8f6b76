"""Messages render in the account's language with every request value escaped in HTML."""

from __future__ import annotations

from typing import Any

import pytest

from services.notify.domain.kinds import MONEY_KINDS, NoticeKind, ParamsShape, params_shape
from services.notify.domain.routing import Language
from services.notify.domain.templates import format_money, render

BASE = "https://mamoru.test"
MOVEMENT = "0191e7a8-0000-7000-8000-000000000001"
PAYMENT: dict[str, Any] = {
    "amount_minor": 1234567,
    "currency": "JPY",
    "counterparty": "ローソン <script>alert('x')</script> & Co",
    "occurred_at": "2025-12-31T15:30:00+00:00",
    "movement_id": MOVEMENT,
    "detail": "",
}


def test_a_japanese_money_notice_names_amount_merchant_time_and_not_me_link() -> None:
    notice = render(
        NoticeKind.PAYMENT, PAYMENT, language=Language.JA, link_base_url=BASE, notice_id="n1"
    )
    assert notice.subject == "【Mamoru】お支払いのお知らせ"
    assert "金額: ¥1,234,567" in notice.text
    assert "相手先: ローソン <script>alert('x')</script> & Co" in notice.text
    assert "日時: 2026年1月1日 00:30 (日本時間)" in notice.text
    assert f"{BASE}/wallet/not-me?movement={MOVEMENT}" in notice.text


def test_html_escapes_every_request_value() -> None:
    notice = render(
        NoticeKind.PAYMENT, PAYMENT, language=Language.JA, link_base_url=BASE, notice_id="n1"
    )
    assert "<script>" not in notice.html
    assert "ローソン &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; Co" in notice.html
    assert f'href="{BASE}/wallet/not-me?movement={MOVEMENT}"' in notice.html


def test_english_notices_read_in_english_with_japan_time() -> None:
    notice = render(
        NoticeKind.TOP_UP, PAYMENT, language=Language.EN, link_base_url=BASE, notice_id="n1"
    )
    assert notice.subject == "Mamoru: top-up"
    assert "Amount: ¥1,234,567" in notice.text
    assert "Time: 1 Jan 2026 00:30 JST" in notice.text
    assert "This wasn't me" in notice.text


def test_a_reset_notice_carries_the_link_and_a_freeze_notice_its_freeze_link() -> None:
    reset = render(
        NoticeKind.PASSWORD_RESET,
        {"secret": "tok&en", "expires_at": None},
        language=Language.JA,
        link_base_url=BASE,
        notice_id="n1",
    )
    assert f"{BASE}/reset-password?token=tok%26en" in reset.text
    changed = render(
        NoticeKind.CONTACT_CHANGED,
        {"occurred_at": None, "freeze_token": "f1", "detail": "email changed"},
        language=Language.EN,
        link_base_url=BASE,
        notice_id="n1",
    )
    assert f"{BASE}/freeze-contact?token=f1" in changed.text
    assert f"{BASE}/security/not-me?notice=n1" in changed.text


@pytest.mark.parametrize("kind", sorted(MONEY_KINDS))
@pytest.mark.parametrize("language", list(Language))
def test_every_money_kind_renders_amount_counterparty_and_link(
    kind: NoticeKind, language: Language
) -> None:
    notice = render(kind, PAYMENT, language=language, link_base_url=BASE, notice_id="n1")
    assert "¥1,234,567" in notice.text and "ローソン" in notice.text
    assert f"movement={MOVEMENT}" in notice.html


@pytest.mark.parametrize("kind", list(NoticeKind))
def test_every_kind_has_a_subject_in_both_languages(kind: NoticeKind) -> None:
    shape = params_shape(kind)
    params: dict[str, Any] = {
        ParamsShape.CODE: {"secret": "123456"},
        ParamsShape.SECURITY_EVENT: {"occurred_at": "2025-01-01T00:00:00+00:00"},
        ParamsShape.MONEY: PAYMENT,
        ParamsShape.NEWS: {"title": "t", "body": "b"},
        ParamsShape.ALERT: {"alert_id": "a", "summary": "s"},
    }[shape]
    ja = render(kind, params, language=Language.JA, link_base_url=BASE, notice_id="n")
    en = render(kind, params, language=Language.EN, link_base_url=BASE, notice_id="n")
    assert ja.subject != en.subject and ja.text and en.html


def test_yen_has_no_minor_unit() -> None:
    assert format_money(0, "JPY") == "¥0"
    assert format_money(1000, "JPY") == "¥1,000"
    assert format_money(-50, "JPY") == "-¥50"
