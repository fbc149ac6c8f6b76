"""Where each kind may go, given what identity reports at send time."""

from __future__ import annotations

from services.notify.domain.kinds import (
    COALESCED_KINDS,
    MONEY_KINDS,
    MUTABLE_KINDS,
    SECURITY_KINDS,
    Channel,
    NoticeKind,
    may_send,
    planned_channels,
)
from services.notify.domain.routing import (
    ContactAddress,
    Destination,
    RegisteredContacts,
    destination,
)

PRIMARY = ContactAddress("c1", Channel.EMAIL, "primary@example.jp", True, True)
SECOND = ContactAddress("c2", Channel.EMAIL, "second@example.jp", True, False)
UNVERIFIED = ContactAddress("c3", Channel.EMAIL, "attacker@example.com", False, False)
PHONE = ContactAddress("c4", Channel.SMS, "+819012345678", True, False)
PENDING_PHONE = ContactAddress("c5", Channel.SMS, "+819099999999", False, False)
ACCOUNT = RegisteredContacts(
    account_id="a1", contacts=(UNVERIFIED, SECOND, PRIMARY, PHONE, PENDING_PHONE)
)


def test_reset_link_goes_only_to_the_primary_verified_email() -> None:
    for kind in (NoticeKind.PASSWORD_RESET, NoticeKind.SIGN_IN_CODE, NoticeKind.FORCED_RESET):
        assert destination(kind, Channel.EMAIL, ACCOUNT).addresses == ("primary@example.jp",)
        assert destination(kind, Channel.SMS, ACCOUNT).addresses == ()


def test_reset_link_goes_nowhere_when_the_primary_email_is_unverified() -> None:
    unverified_primary = ContactAddress("c9", Channel.EMAIL, "p@example.jp", False, True)
    account = RegisteredContacts(account_id="a1", contacts=(unverified_primary, SECOND))
    assert destination(NoticeKind.PASSWORD_RESET, Channel.EMAIL, account).addresses == ()


def test_reset_requested_tells_every_other_verified_channel() -> None:
    kind = NoticeKind.RESET_REQUESTED
    assert destination(kind, Channel.EMAIL, ACCOUNT).addresses == ("second@example.jp",)
    assert destination(kind, Channel.SMS, ACCOUNT).addresses == ("+819012345678",)


def test_security_notices_reach_every_verified_address_and_no_unverified_one() -> None:
    kind = NoticeKind.NEW_DEVICE_SIGN_IN
    assert destination(kind, Channel.EMAIL, ACCOUNT).addresses == (
        "second@example.jp",
        "primary@example.jp",
    )
    assert destination(kind, Channel.SMS, ACCOUNT).addresses == ("+819012345678",)
    assert destination(kind, Channel.PUSH, ACCOUNT).addresses == ()
    assert destination(kind, Channel.INBOX, ACCOUNT).addresses == ("inbox",)


def test_a_verification_code_goes_only_to_the_pending_contact_it_is_for() -> None:
    kind = NoticeKind.CONTACT_VERIFICATION
    assert destination(kind, Channel.EMAIL, ACCOUNT, pending_contact_id="c5") == Destination(
        Channel.SMS, ("+819099999999",)
    )
    assert destination(kind, Channel.EMAIL, ACCOUNT, pending_contact_id="nope").addresses == ()
    assert destination(kind, Channel.EMAIL, ACCOUNT).addresses == ()


def test_only_identity_sends_security_kinds_and_only_identity_or_wallet_money_kinds() -> None:
    for kind in SECURITY_KINDS:
        assert [c for c in ("identity", "wallet", "risk", "operator") if may_send(c, kind)] == [
            "identity"
        ]
    for kind in MONEY_KINDS:
        allowed = [c for c in ("identity", "wallet", "risk", "operator") if may_send(c, kind)]
        assert allowed == ["identity", "wallet"]
    assert not may_send("identity", NoticeKind.OPERATOR_ALERT)


def test_only_marketing_kinds_can_be_muted_or_coalesced_kinds_are_security_ones() -> None:
    assert {NoticeKind.NEWS} == MUTABLE_KINDS
    assert COALESCED_KINDS <= SECURITY_KINDS
    assert not COALESCED_KINDS & MONEY_KINDS


def test_codes_travel_by_one_channel_and_security_events_by_all() -> None:
    assert planned_channels(NoticeKind.PASSWORD_RESET) == (Channel.EMAIL,)
    assert set(planned_channels(NoticeKind.PASSWORD_CHANGED)) == set(Channel)
    assert Channel.INBOX in planned_channels(NoticeKind.PAYMENT)
