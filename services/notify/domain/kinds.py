"""Notice kinds, channels and delivery states, and the rules attached to each kind.

The numbers equal those of the contract (``mamoru.notify.v1``), so translating
between the two is a plain conversion.
"""

from __future__ import annotations

import enum


class NoticeKind(enum.IntEnum):
    CONTACT_VERIFICATION = 1
    REGISTRATION_ATTEMPT = 2
    PASSWORD_RESET = 3
    RESET_REQUESTED = 4
    SIGN_IN_CODE = 5
    NEW_DEVICE_SIGN_IN = 6
    PASSWORD_CHANGED = 7
    FACTOR_CHANGED = 8
    CONTACT_CHANGED = 9
    SECOND_FACTOR_FAILED = 10
    PASSKEY_CLONED = 11
    FORCED_RESET = 12
    ACCOUNT_STATUS = 13
    TOP_UP = 20
    PAYMENT = 21
    REFUND = 22
    COMPENSATION = 23
    PAYOUT = 24
    WALLET_STATUS = 25
    WIND_DOWN = 26
    NEWS = 40
    OPERATOR_ALERT = 60


class Channel(enum.IntEnum):
    EMAIL = 1
    SMS = 2
    PUSH = 3
    INBOX = 4


class DeliveryStatus(enum.IntEnum):
    PENDING = 1
    SENT = 2
    FAILED = 3
    DEAD = 4
    COALESCED = 5
    MUTED = 6
    NO_ADDRESS = 7

    @property
    def stored(self) -> str:
        """The value kept in the ``deliveries.status`` column."""
        return self.name.lower()

    @classmethod
    def from_stored(cls, value: str) -> DeliveryStatus:
        return cls[value.upper()]


class ParamsShape(enum.Enum):
    """Which typed parameters a kind carries (the request's ``params`` oneof)."""

    CODE = "code"
    SECURITY_EVENT = "security_event"
    MONEY = "money"
    NEWS = "news"
    ALERT = "alert"


CODE_KINDS = frozenset(
    {
        NoticeKind.CONTACT_VERIFICATION,
        NoticeKind.PASSWORD_RESET,
        NoticeKind.SIGN_IN_CODE,
        NoticeKind.FORCED_RESET,
    }
)
SECURITY_KINDS = frozenset(kind for kind in NoticeKind if 1 <= kind <= 13)
MONEY_KINDS = frozenset(kind for kind in NoticeKind if 20 <= kind <= 26)
# Money kinds that report one movement: they must name amount, counterparty and movement.
MOVEMENT_KINDS = frozenset(
    {
        NoticeKind.TOP_UP,
        NoticeKind.PAYMENT,
        NoticeKind.REFUND,
        NoticeKind.COMPENSATION,
        NoticeKind.PAYOUT,
    }
)
MUTABLE_KINDS = frozenset({NoticeKind.NEWS})
# A link or code that is itself a credential goes to the primary verified email
# and nowhere else, so a phone number or push token added by an attacker
# cannot receive it.
PRIMARY_EMAIL_ONLY_KINDS = frozenset(
    {NoticeKind.PASSWORD_RESET, NoticeKind.SIGN_IN_CODE, NoticeKind.FORCED_RESET}
)
# Kinds anyone can trigger for someone else's account (a reset, a registration
# attempt); beyond a few per window they are recorded but not sent, so nobody
# can flood a mailbox through them.
COALESCED_KINDS = frozenset(
    {
        NoticeKind.PASSWORD_RESET,
        NoticeKind.RESET_REQUESTED,
        NoticeKind.SIGN_IN_CODE,
        NoticeKind.REGISTRATION_ATTEMPT,
        NoticeKind.CONTACT_VERIFICATION,
    }
)

_BROADCAST = (Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.INBOX)


def params_shape(kind: NoticeKind) -> ParamsShape:
    if kind in CODE_KINDS:
        return ParamsShape.CODE
    if kind in SECURITY_KINDS:
        return ParamsShape.SECURITY_EVENT
    if kind in MONEY_KINDS:
        return ParamsShape.MONEY
    if kind is NoticeKind.NEWS:
        return ParamsShape.NEWS
    return ParamsShape.ALERT


def planned_channels(kind: NoticeKind) -> tuple[Channel, ...]:
    """One delivery per channel is stored when a notice is accepted.

    A code travels by one channel only (a verification code to a pending phone
    switches to SMS at send time); other security notices reach every channel.
    """
    if kind in CODE_KINDS or kind is NoticeKind.OPERATOR_ALERT:
        return (Channel.EMAIL,)
    if kind in SECURITY_KINDS:
        return _BROADCAST
    if kind in MONEY_KINDS:
        return (Channel.EMAIL, Channel.PUSH, Channel.INBOX)
    return (Channel.EMAIL, Channel.INBOX)


def may_send(caller: str, kind: NoticeKind) -> bool:
    """Only identity sends security kinds; identity and wallet send money kinds."""
    if kind in SECURITY_KINDS:
        return caller == "identity"
    if kind in MONEY_KINDS:
        return caller in ("identity", "wallet")
    if kind is NoticeKind.NEWS:
        return caller == "operator"
    return False


def may_use_kept_contacts(kind: NoticeKind) -> bool:
    """Money notices and news may go to the contacts notify kept from an earlier
    look-up (dropped as soon as identity announces a change); security notices and
    codes always ask identity at send time."""
    return kind in MONEY_KINDS or kind is NoticeKind.NEWS
