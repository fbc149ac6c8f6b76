"""The local mailbox (the Maildir `make run`'s SMTP server writes) as a person reads it.

Notify writes MIME mail with encoded Japanese bodies; this decodes them, lists
them newest first and pulls out what a person looks for: codes and links.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

# Notify writes "コード: 123456" or "Code: 123456"; a full-width colon is accepted too.
_CODE = re.compile(r"(?:コード|[Cc]ode)\s*[:\uff1a]\s*([0-9]{4,10})")
_LINK = re.compile(r"https?://[^\s<>\"')]+")
LATEST = 3


@dataclass(frozen=True)
class Mail:
    received_at: datetime
    to: str
    subject: str
    body: str

    @property
    def codes(self) -> list[str]:
        return _CODE.findall(self.body)

    @property
    def links(self) -> list[str]:
        return _LINK.findall(self.body)


def read_mailbox(folder: Path) -> list[Mail]:
    """Every message in the Maildir at ``folder``, newest first."""
    if not folder.exists():
        return []
    box = mailbox.Maildir(folder, create=False)
    found: list[tuple[float, str, Mail]] = []
    for key in box.iterkeys():
        kept = box.get_message(key)
        parsed = email.message_from_bytes(kept.as_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        body_part = parsed.get_body(preferencelist=("plain", "html"))
        body = body_part.get_content() if body_part is not None else ""
        delivered = kept.get_date()
        found.append(
            (
                delivered,
                key,
                Mail(
                    received_at=datetime.fromtimestamp(delivered, UTC),
                    to=str(parsed["To"] or ""),
                    subject=str(parsed["Subject"] or ""),
                    body=str(body).strip(),
                ),
            )
        )
    # Maildir keys begin with the delivery time, which breaks ties within a second.
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [mail for _, _, mail in found]


def render(mails: list[Mail], *, limit: int, full: bool, now: datetime | None = None) -> str:
    """The latest codes and links first, then the messages, newest first."""
    now = now or datetime.now(UTC)
    if not mails:
        return "The mailbox is empty."
    codes = [(code, mail) for mail in mails for code in mail.codes][:LATEST]
    links = [(link, mail) for mail in mails for link in mail.links][:LATEST]
    lines = ["Latest codes (newest first):"]
    lines += [f"  {code:<10} {_ago(m, now):>8}  to {m.to}  {m.subject}" for code, m in codes]
    lines += [] if codes else ["  (none)"]
    lines.append("Latest links (newest first):")
    lines += [f"  {_ago(m, now):>8}  to {m.to}  {link}" for link, m in links]
    lines += [] if links else ["  (none)"]
    lines.append("")
    lines.append(f"{len(mails)} messages; the newest {min(limit, len(mails))}:")
    for mail in mails[:limit]:
        lines.append("")
        lines.append(f"--- {mail.received_at:%Y-%m-%d %H:%M:%S} UTC ({_ago(mail, now)})")
        lines.append(f"To: {mail.to}")
        lines.append(f"Subject: {mail.subject}")
        body = mail.body if full else _shorten(mail.body)
        lines.extend(f"  {line}" for line in body.splitlines())
    return "\n".join(lines)


def _ago(mail: Mail, now: datetime) -> str:
    seconds = max(0, int((now - mail.received_at).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _shorten(body: str, lines: int = 12) -> str:
    kept = [line for line in body.splitlines() if line.strip()]
    if len(kept) <= lines:
        return "\n".join(kept)
    return "\n".join([*kept[:lines], f"... ({len(kept) - lines} more lines; --full shows all)"])
