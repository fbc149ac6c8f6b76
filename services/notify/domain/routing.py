"""Where a notice goes, decided at send time from the account's verified contacts."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from services.notify.domain.kinds import (
    PRIMARY_EMAIL_ONLY_KINDS,
    Channel,
    NoticeKind,
)

INBOX_ADDRESS = "inbox"


class Language(enum.Enum):
    JA = "ja"
    EN = "en"


@dataclass(frozen=True)
class Recipient:
    """Whom a notice is for: the group account or the wallet's pairwise payer ID."""

    account_id: str | None = None
    payer_id: str | None = None

    def __post_init__(self) -> None:
        if (self.account_id is None) == (self.payer_id is None):
            raise ValueError("a recipient is an account_id or a payer_id, exactly one")

    @property
    def key(self) -> str:
        """Stable text naming the recipient, for rate limiting."""
        return f"account:{self.account_id}" if self.account_id else f"payer:{self.payer_id}"


@dataclass(frozen=True)
class ContactAddress:
    """One of the account's contacts as identity reports it."""

    contact_id: str
    channel: Channel
    address: str
    verified: bool
    primary: bool


@dataclass(frozen=True)
class RegisteredContacts:
    """What identity knows at send time: the account, its contacts and language."""

    account_id: str
    contacts: tuple[ContactAddress, ...]
    language: Language = Language.JA
    display_name: str | None = None


@dataclass(frozen=True)
class Destination:
    """The channel actually used and the addresses on it (empty: nowhere to send)."""

    channel: Channel
    addresses: tuple[str, ...]


def destination(
    kind: NoticeKind,
    channel: Channel,
    registered: RegisteredContacts,
    *,
    pending_contact_id: str | None = None,
) -> Destination:
    """Addresses a delivery on ``channel`` may use; never an unverified one but
    the pending contact a verification code is for."""
    if kind is NoticeKind.CONTACT_VERIFICATION:
        pending = [
            contact
            for contact in registered.contacts
            if pending_contact_id and contact.contact_id == pending_contact_id
        ]
        if not pending or pending[0].channel not in (Channel.EMAIL, Channel.SMS):
            return Destination(channel, ())
        return Destination(pending[0].channel, (pending[0].address,))
    if channel is Channel.INBOX:
        return Destination(channel, (INBOX_ADDRESS,))
    verified = [c for c in registered.contacts if c.verified and c.channel is channel]
    if kind in PRIMARY_EMAIL_ONLY_KINDS:
        if channel is not Channel.EMAIL:
            return Destination(channel, ())
        primary = [c.address for c in verified if c.primary]
        return Destination(channel, tuple(primary[:1]))
    if kind is NoticeKind.RESET_REQUESTED:
        # The primary email gets the reset link itself; every other channel is told.
        verified = [c for c in verified if not c.primary]
    return Destination(channel, tuple(dict.fromkeys(c.address for c in verified)))
