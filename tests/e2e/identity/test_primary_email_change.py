"""Who may move the primary email, the address reset links and sign-in codes go to.

The incident drill's attacker holds a reused password and the victim's inbox:
one email code gives them a session on a new device. That session must not point
the account's resets at their own address (nor enrol a factor: test_factor_enrolment).
"""

from __future__ import annotations

import grpc
import pytest
from mamoru.identity.v1 import identity_pb2 as pb

from tests.e2e.identity.conftest import IdentityOnCluster
from tests.support.people import TIMEOUT, code_in, next_mail, subject_is

pytestmark = pytest.mark.asyncio

ATTACKER = "mine@attacker.example"


async def add_email(
    identity: IdentityOnCluster,
    session: pb.SessionTokens,
    address: str,
    *,
    primary: bool,
    device_proof: str = "",
) -> pb.Contact:
    reply = await identity.stub.AddContact(
        pb.AddContactRequest(
            kind=pb.CONTACT_KIND_EMAIL,
            address=address,
            make_primary=primary,
            device_proof=device_proof,
        ),
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )
    contact: pb.Contact = reply.contact
    return contact


async def refusal_reason(
    identity: IdentityOnCluster, session: pb.SessionTokens, address: str
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await add_email(identity, session, address, primary=True)
    return refused.value.code(), refused.value.details() or ""


async def test_an_email_code_session_on_a_new_device_cannot_make_its_own_address_primary(
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("hanako@example.jp", device="phone-1")
    stranger = await identity.sign_in_with_email_code(person, device="attacker-laptop")

    code, details = await refusal_reason(identity, stranger, ATTACKER)

    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "registered on" in details
    # A second address only ever hears that a reset was asked for; adding one stays possible.
    second = await add_email(identity, stranger, ATTACKER, primary=False)
    assert not second.primary
    # The person on the phone they registered with moves the primary email as before,
    # the phone proving its key on the call.
    own = (await identity.login(person, device="phone-1")).session
    moved = await add_email(
        identity,
        own,
        "hanako.new@example.jp",
        primary=True,
        device_proof=person.session_proof("AddContact", own),
    )
    mail = await next_mail(
        identity.mailbox, "hanako.new@example.jp", subject_is("確認コード", "verification"), after=0
    )
    verified = await identity.stub.VerifyContact(
        pb.VerifyContactRequest(contact_id=moved.contact_id, code=code_in(mail)),
        metadata=identity.bearer(own),
        timeout=TIMEOUT,
    )
    assert verified.contact.primary


async def test_a_passkey_session_on_a_new_phone_cannot_move_the_primary_email_in_a_cool_off(
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("hanako@example.jp", device="phone-1")
    await identity.enrol_passkey(person, await identity.sign_in(person))
    person.device, person.session = "phone-2", None
    strong = await identity.sign_in(person)
    assert strong.assurance_level == 2
    # A credential change starts the cool-off; the session that made it stays open.
    changed = await identity.stub.ChangePassword(
        pb.ChangePasswordRequest(
            current_password=person.password, new_password="a new and longer passphrase"
        ),
        metadata=identity.bearer(strong),
        timeout=TIMEOUT,
    )

    code, details = await refusal_reason(identity, changed.session, ATTACKER)

    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "cool-off" in details


async def test_a_passkey_session_on_a_new_phone_may_move_the_primary_email(
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("hanako@example.jp", device="phone-1")
    await identity.enrol_passkey(person, await identity.sign_in(person))
    person.device, person.session = "phone-2", None

    session = await identity.sign_in(person)

    assert session.assurance_level == 2
    added = await add_email(identity, session, "hanako.new@example.jp", primary=True)
    assert not added.verified
