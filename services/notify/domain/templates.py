"""Messages in Japanese (the default) and English, as plain text and HTML.

Every value that comes from a request is escaped when it goes into HTML, in
one place (``_html``), so a merchant name like ``<b>&`` shows as written.
Money notices always name the amount, the counterparty, the time and carry a
"this wasn't me" link naming the movement, which leads to the freeze-and-case flow.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from services.notify.domain.kinds import (
    MONEY_KINDS,
    NoticeKind,
    ParamsShape,
    params_shape,
)
from services.notify.domain.routing import Language

TOKYO = ZoneInfo("Asia/Tokyo")

_SUBJECTS: dict[NoticeKind, tuple[str, str]] = {
    NoticeKind.CONTACT_VERIFICATION: ("【Mamoru】確認コード", "Mamoru: your verification code"),
    NoticeKind.REGISTRATION_ATTEMPT: (
        "【Mamoru】このアドレスで登録が試みられました",
        "Mamoru: someone tried to register with this address",
    ),
    NoticeKind.PASSWORD_RESET: ("【Mamoru】パスワードの再設定", "Mamoru: reset your password"),
    NoticeKind.RESET_REQUESTED: (
        "【Mamoru】パスワードの再設定が要求されました",
        "Mamoru: a password reset was requested",
    ),
    NoticeKind.SIGN_IN_CODE: ("【Mamoru】サインインコード", "Mamoru: your sign-in code"),
    NoticeKind.NEW_DEVICE_SIGN_IN: (
        "【Mamoru】新しい端末からのサインイン",
        "Mamoru: sign-in from a new device",
    ),
    NoticeKind.PASSWORD_CHANGED: (
        "【Mamoru】パスワードが変更されました",
        "Mamoru: your password was changed",
    ),
    NoticeKind.FACTOR_CHANGED: (
        "【Mamoru】認証方法が変更されました",
        "Mamoru: a sign-in method was changed",
    ),
    NoticeKind.CONTACT_CHANGED: (
        "【Mamoru】連絡先が変更されようとしています",
        "Mamoru: a contact address is changing",
    ),
    NoticeKind.SECOND_FACTOR_FAILED: (
        "【Mamoru】正しいパスワードの後に二段階認証が失敗しました",
        "Mamoru: correct password, failed second factor",
    ),
    NoticeKind.PASSKEY_CLONED: (
        "【Mamoru】パスキーの複製の疑いがあり停止しました",
        "Mamoru: a passkey looks cloned and was suspended",
    ),
    NoticeKind.FORCED_RESET: (
        "【Mamoru】パスワードの再設定が必要です",
        "Mamoru: please choose a new password",
    ),
    NoticeKind.ACCOUNT_STATUS: (
        "【Mamoru】アカウントの状態が変わりました",
        "Mamoru: your account status changed",
    ),
    NoticeKind.TOP_UP: ("【Mamoru】チャージのお知らせ", "Mamoru: top-up"),
    NoticeKind.PAYMENT: ("【Mamoru】お支払いのお知らせ", "Mamoru: payment"),
    NoticeKind.REFUND: ("【Mamoru】返金のお知らせ", "Mamoru: refund"),
    NoticeKind.COMPENSATION: ("【Mamoru】補償のお知らせ", "Mamoru: compensation"),
    NoticeKind.PAYOUT: ("【Mamoru】払い出しのお知らせ", "Mamoru: payout"),
    NoticeKind.WALLET_STATUS: (
        "【Mamoru】ウォレットの状態が変わりました",
        "Mamoru: your wallet status changed",
    ),
    NoticeKind.WIND_DOWN: (
        "【Mamoru】サービス終了と残高のお受け取り",
        "Mamoru: the service is closing; claim your balance",
    ),
    NoticeKind.NEWS: ("【Mamoru】お知らせ", "Mamoru: news"),
    NoticeKind.OPERATOR_ALERT: ("【Mamoru 運用】アラート", "Mamoru operators: alert"),
}

_LEADS: dict[NoticeKind, tuple[str, str]] = {
    NoticeKind.CONTACT_VERIFICATION: (
        "連絡先を確認するため、次のコードを入力してください。",
        "Enter this code to verify your contact address.",
    ),
    NoticeKind.REGISTRATION_ATTEMPT: (
        "このアドレスはすでに登録されています。心当たりがなければ、この通知は無視してください。",
        "This address already has an account. If this was not you, you can ignore this notice.",
    ),
    NoticeKind.PASSWORD_RESET: (
        "次のリンクから新しいパスワードを設定してください。",
        "Use this link to choose a new password.",
    ),
    NoticeKind.RESET_REQUESTED: (
        "パスワードの再設定が要求されました。リンクは登録済みのメールアドレスにのみ送られます。",
        "A password reset was requested. The link goes only to your registered email address.",
    ),
    NoticeKind.SIGN_IN_CODE: (
        "サインインを完了するため、次のコードを入力してください。",
        "Enter this code to finish signing in.",
    ),
    NoticeKind.NEW_DEVICE_SIGN_IN: (
        "新しい端末からサインインがありました。",
        "Your account was signed in from a new device.",
    ),
    NoticeKind.PASSWORD_CHANGED: ("パスワードが変更されました。", "Your password was changed."),
    NoticeKind.FACTOR_CHANGED: (
        "認証方法が変更されました。",
        "A sign-in method of your account was changed.",
    ),
    NoticeKind.CONTACT_CHANGED: (
        "アカウントの連絡先が変更されようとしています。",
        "A contact address of your account is changing.",
    ),
    NoticeKind.SECOND_FACTOR_FAILED: (
        "正しいパスワードでのサインインの後、二段階認証に失敗しました。",
        "Someone entered your correct password but failed the second factor.",
    ),
    NoticeKind.PASSKEY_CLONED: (
        "パスキーが複製された可能性があるため、停止しました。",
        "One of your passkeys may have been cloned, so it was suspended.",
    ),
    NoticeKind.FORCED_RESET: (
        "安全のため、パスワードを再設定してください。",
        "For your safety, please choose a new password.",
    ),
    NoticeKind.ACCOUNT_STATUS: (
        "アカウントの状態が変わりました。",
        "The status of your account changed.",
    ),
    NoticeKind.TOP_UP: ("チャージがありました。", "Your balance was topped up."),
    NoticeKind.PAYMENT: ("お支払いがありました。", "A payment was made."),
    NoticeKind.REFUND: ("返金がありました。", "A refund was made."),
    NoticeKind.COMPENSATION: ("補償が入金されました。", "A compensation was credited."),
    NoticeKind.PAYOUT: ("払い出しがありました。", "A payout was made."),
    NoticeKind.WALLET_STATUS: ("ウォレットの状態が変わりました。", "Your wallet status changed."),
    NoticeKind.WIND_DOWN: (
        "サービスを終了します。残高をお受け取りください。",
        "The service is closing. Please claim your balance.",
    ),
    NoticeKind.NEWS: ("", ""),
    NoticeKind.OPERATOR_ALERT: ("risk からのアラートです。", "An alert from risk."),
}

_LABELS: dict[str, tuple[str, str]] = {
    "code": ("コード", "Code"),
    "expires": ("有効期限", "Expires"),
    "time": ("日時", "Time"),
    "ip": ("IPアドレス", "IP address"),
    "country": ("国・地域", "Country"),
    "device": ("端末", "Device"),
    "detail": ("内容", "Detail"),
    "amount": ("金額", "Amount"),
    "counterparty": ("相手先", "Merchant or source"),
    "balance": ("残高", "Balance"),
    "movement": ("取引番号", "Movement"),
    "severity": ("重要度", "Severity"),
    "alert": ("アラート", "Alert"),
    "evidence": ("根拠", "Evidence"),
    "reset_link": ("パスワードを再設定する", "Choose a new password"),
    "freeze_link": (
        "この変更に心当たりがない場合は、こちらから止めてください",
        "If this wasn't you, stop the change here",
    ),
    "not_me_link": ("心当たりがない場合はこちら", "This wasn't me"),
    "greeting": ("{name} 様", "Dear {name},"),
}


@dataclass(frozen=True)
class RenderedNotice:
    """A message ready for a channel: subject, plain text, and HTML for email."""

    subject: str
    text: str
    html: str


@dataclass
class _Message:
    lead: str
    greeting: str = ""
    rows: list[tuple[str, str]] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)


def format_money(amount_minor: int, currency: str) -> str:
    """¥1,234 for JPY (no minor unit); other currencies as the code and minor units."""
    if currency == "JPY":
        sign = "-" if amount_minor < 0 else ""
        return f"{sign}¥{abs(amount_minor):,}"
    return f"{amount_minor:,} {currency} (minor units)"


def format_time(moment: datetime, language: Language) -> str:
    """Japanese time for both languages: the service and its stores are in Japan."""
    local = moment.astimezone(TOKYO)
    if language is Language.JA:
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M} (日本時間)"
    return f"{local.day} {local:%b %Y %H:%M} JST"


def link(base_url: str, path: str, **query: str) -> str:
    return f"{base_url.rstrip('/')}/{path}?{urlencode(query)}"


def render(
    kind: NoticeKind,
    params: dict[str, Any],
    *,
    language: Language,
    link_base_url: str,
    notice_id: str,
    display_name: str | None = None,
) -> RenderedNotice:
    """Render a notice from its stored typed parameters."""
    index = 0 if language is Language.JA else 1

    def label(name: str) -> str:
        return _LABELS[name][index]

    message = _Message(lead=_LEADS[kind][index])
    if display_name:
        message.greeting = label("greeting").format(name=display_name)
    shape = params_shape(kind)
    if shape is ParamsShape.CODE:
        _code_rows(kind, params, message, label, language, link_base_url)
    elif shape is ParamsShape.SECURITY_EVENT:
        _event_rows(kind, params, message, label, language, link_base_url, notice_id)
    elif shape is ParamsShape.MONEY:
        _money_rows(kind, params, message, label, language, link_base_url)
    elif shape is ParamsShape.NEWS:
        message.lead = str(params.get("title", ""))
        message.paragraphs.append(str(params.get("body", "")))
    else:
        message.rows += [
            (label("alert"), str(params.get("alert_id", ""))),
            (label("severity"), str(params.get("severity", ""))),
        ]
        message.paragraphs += [str(params.get("summary", "")), str(params.get("evidence_json", ""))]
    subject = _SUBJECTS[kind][index]
    if shape is ParamsShape.NEWS and params.get("title"):
        subject = f"{subject}: {params['title']}"
    return RenderedNotice(subject=subject, text=_text(message), html=_html(message, language))


def _when(value: Any, language: Language) -> str:
    if not value:
        return ""
    return format_time(datetime.fromisoformat(str(value)), language)


def _code_rows(
    kind: NoticeKind,
    params: dict[str, Any],
    message: _Message,
    label: Any,
    language: Language,
    base: str,
) -> None:
    secret = str(params.get("secret", ""))
    if kind in (NoticeKind.PASSWORD_RESET, NoticeKind.FORCED_RESET):
        message.links.append((label("reset_link"), link(base, "reset-password", token=secret)))
    else:
        message.rows.append((label("code"), secret))
    if params.get("expires_at"):
        message.rows.append((label("expires"), _when(params["expires_at"], language)))


def _event_rows(
    kind: NoticeKind,
    params: dict[str, Any],
    message: _Message,
    label: Any,
    language: Language,
    base: str,
    notice_id: str,
) -> None:
    for name, key in (("ip", "ip_address"), ("country", "country_code"), ("device", "device")):
        if params.get(key):
            message.rows.append((label(name), str(params[key])))
    if params.get("detail"):
        message.rows.append((label("detail"), str(params["detail"])))
    message.rows.insert(0, (label("time"), _when(params.get("occurred_at"), language)))
    if params.get("freeze_token"):
        message.links.append(
            (label("freeze_link"), link(base, "freeze-contact", token=str(params["freeze_token"])))
        )
    if kind is not NoticeKind.REGISTRATION_ATTEMPT:
        message.links.append(
            (label("not_me_link"), link(base, "security/not-me", notice=notice_id))
        )


def _money_rows(
    kind: NoticeKind,
    params: dict[str, Any],
    message: _Message,
    label: Any,
    language: Language,
    base: str,
) -> None:
    assert kind in MONEY_KINDS
    if params.get("currency"):
        amount = format_money(int(params["amount_minor"]), str(params["currency"]))
        message.rows.append((label("amount"), amount))
    if params.get("counterparty"):
        message.rows.append((label("counterparty"), str(params["counterparty"])))
    message.rows.append((label("time"), _when(params.get("occurred_at"), language)))
    if params.get("balance_currency"):
        balance = format_money(int(params["balance_minor"]), str(params["balance_currency"]))
        message.rows.append((label("balance"), balance))
    if params.get("detail"):
        message.rows.append((label("detail"), str(params["detail"])))
    if params.get("movement_id"):
        movement = str(params["movement_id"])
        message.rows.append((label("movement"), movement))
        message.links.append((label("not_me_link"), link(base, "wallet/not-me", movement=movement)))


def _text(message: _Message) -> str:
    lines = [message.greeting, ""] if message.greeting else []
    if message.lead:
        lines += [message.lead, ""]
    lines += [f"{name}: {value}" for name, value in message.rows]
    for paragraph in message.paragraphs:
        lines += ["", paragraph]
    for title, url in message.links:
        lines += ["", f"{title}:", url]
    lines += ["", "Mamoru"]
    return "\n".join(lines).strip() + "\n"


def _html(message: _Message, language: Language) -> str:
    e = html.escape
    parts = [f'<!doctype html><html lang="{language.value}"><body>']
    if message.greeting:
        parts.append(f"<p>{e(message.greeting)}</p>")
    if message.lead:
        parts.append(f"<p>{e(message.lead)}</p>")
    if message.rows:
        parts.append("<table>")
        parts += [f"<tr><th>{e(name)}</th><td>{e(value)}</td></tr>" for name, value in message.rows]
        parts.append("</table>")
    for paragraph in message.paragraphs:
        body = "<br>".join(e(line) for line in paragraph.splitlines())
        parts.append(f"<p>{body}</p>")
    parts += [f'<p><a href="{e(url)}">{e(title)}</a></p>' for title, url in message.links]
    parts.append("<p>Mamoru</p></body></html>")
    return "".join(parts)


def subject_lines(kind: NoticeKind) -> tuple[str, ...]:
    """Every subject a notice of ``kind`` may carry, one per language."""
    return _SUBJECTS[kind]
