"""The device an account was registered on may do two things other devices may not:
move the primary email without a strong session, and enrol the first factor without
a cool-off. Both belong to the device's key, live on the account, proving itself on
the very call; a removed phone signed in again, or a copied token, gets neither.

Over real identity, risk and notify servers; the attacker holds the stolen phone
(whose mail app opens the inbox) or a copy of a session's access token.
"""

from __future__ import annotations

import grpc
import jwt
import pytest
from mamoru.identity.v1 import identity_pb2 as pb

from services.runtime.device_proof import DeviceKey
from tests.e2e.identity.checks import reason_of, refused
from tests.e2e.identity.conftest import IdentityOnCluster
from tests.support.people import TIMEOUT, Person, bearer, next_totp, session_methods

pytestmark = pytest.mark.asyncio

ATTACKER = "mine@attacker.example"


def make_primary(address: str, device_proof: str) -> pb.AddContactRequest:
    return pb.AddContactRequest(
        kind=pb.CONTACT_KIND_EMAIL,
        address=address,
        make_primary=True,
        device_proof=device_proof,
    )


async def the_phone_removed_and_signed_in_again(
    identity: IdentityOnCluster, person: Person
) -> pb.SessionTokens:
    """The owner removes the phone from a laptop; whoever holds the phone signs in on it
    again with the password and a code the phone's mail app shows."""
    laptop = await identity.sign_in_with_email_code(person, device="laptop")
    await identity.stub.RevokeDevice(
        pb.RevokeDeviceRequest(device_id=person.key().thumbprint),
        metadata=bearer(laptop),
        timeout=TIMEOUT,
    )
    again = await identity.sign_in_with_email_code(person, device=person.device)
    claims = jwt.decode(again.access_token, options={"verify_signature": False})
    # The very key the account was registered with, proving itself on the call.
    assert claims["cnf"] == {"jkt": person.key().thumbprint}
    assert "email_code" in session_methods(again)
    return again


async def assert_cooling_off(identity: IdentityOnCluster, person: Person) -> None:
    """The wallet stays shut even to a level-2 session with the new factor."""
    strong = await identity.step_up(person, (await identity.login(person)).session)
    assert strong.assurance_level == 2
    cooling = await refused(
        identity.stub.ExchangeToken(
            identity.exchange_request(person, strong), metadata=bearer(strong), timeout=TIMEOUT
        )
    )
    assert cooling.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(cooling) == "COOLOFF"


async def test_a_removed_registration_device_signed_in_again_cannot_move_the_primary_email(
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("hanako@example.jp", device="phone-1")
    thief = await the_phone_removed_and_signed_in_again(identity, person)

    refusal = await refused(
        identity.stub.AddContact(
            make_primary(ATTACKER, person.session_proof("AddContact", thief)),
            metadata=bearer(thief),
            timeout=TIMEOUT,
        )
    )

    assert refusal.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(refusal) == "ASSURANCE_TOO_LOW"


async def test_a_removed_registration_device_signed_in_again_enrols_a_first_factor_with_a_cool_off(
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("hanako@example.jp", device="phone-1")
    thief = await the_phone_removed_and_signed_in_again(identity, person)

    await identity.enrol_totp(person, thief)

    await assert_cooling_off(identity, person)


async def test_a_copied_token_of_a_password_only_session_on_the_registration_device_cannot_move_the_primary_email(  # noqa: E501
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("hanako@example.jp", device="phone-1")
    own = (await identity.login(person)).session
    assert session_methods(own) == {"password"}
    elsewhere = (await identity.login(person)).session
    attempts = {
        "no proof": "",
        "the attacker's own key": DeviceKey().proof("AddContact", own.access_token),
        "the phone's proof for another session's token": person.proof(
            "AddContact", elsewhere.access_token
        ),
        "the phone's proof for another call": person.proof("ExchangeToken", own.access_token),
    }
    for what, proof in attempts.items():
        refusal = await refused(
            identity.stub.AddContact(
                make_primary(ATTACKER, proof), metadata=bearer(own), timeout=TIMEOUT
            )
        )
        # Judged as from any device without the privilege: nothing says why.
        assert refusal.code() == grpc.StatusCode.PERMISSION_DENIED, what
        assert reason_of(refusal) == "ASSURANCE_TOO_LOW", what

    # The phone itself, proving its key on this call, moves it as before.
    proof = person.session_proof("AddContact", own)
    added = await identity.stub.AddContact(
        make_primary("hanako.new@example.jp", proof), metadata=bearer(own), timeout=TIMEOUT
    )
    assert not added.contact.verified
    # The same proof again (a captured call) is a copy, not the phone.
    replayed = await refused(
        identity.stub.AddContact(
            make_primary(ATTACKER, proof), metadata=bearer(own), timeout=TIMEOUT
        )
    )
    assert reason_of(replayed) == "ASSURANCE_TOO_LOW"


async def test_a_first_factor_enrolled_with_a_copied_token_on_the_registration_device_starts_a_cool_off(  # noqa: E501
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("hanako@example.jp", device="phone-1")
    own = (await identity.login(person)).session
    begun = await identity.stub.BeginTotpEnrollment(
        pb.BeginTotpEnrollmentRequest(), metadata=bearer(own), timeout=TIMEOUT
    )

    await identity.stub.ConfirmTotpEnrollment(
        pb.ConfirmTotpEnrollmentRequest(
            enrollment_id=begun.enrollment_id, code=await next_totp(begun.secret)
        ),
        metadata=bearer(own),
        timeout=TIMEOUT,
    )
    person.totp_secret = begun.secret

    await assert_cooling_off(identity, person)
