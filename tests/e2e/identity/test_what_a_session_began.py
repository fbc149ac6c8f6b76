"""What was begun before a revocation or a credential change cannot be finished after
it: sign-in challenges (an email code begun with the old password), reset links,
step-ups, passkey registrations, authenticator app enrolments, contact codes and
refresh tokens."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest
from mamoru.identity.v1 import identity_pb2 as pb

from tests.e2e.identity.conftest import IdentityOnCluster
from tests.support.people import (
    SIGN_IN_SUBJECTS,
    TIMEOUT,
    Person,
    client,
    code_in,
    next_mail,
    next_totp,
    reset_mail,
    reset_token_in,
    subject_is,
)

pytestmark = pytest.mark.asyncio

NEW_PASSWORD = "a completely new passphrase 2026"
ATTACKER = client("attacker-laptop", "198.51.100.7")


async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


async def emailed_sign_in_code(identity: IdentityOnCluster, person: Person) -> tuple[str, str]:
    """The password from a new device, then the sign-in code mailed to the owner's
    inbox (which the attacker reads too): (challenge id, code)."""
    reply = await identity.login(person, ATTACKER.device_id, ATTACKER.ip_address)
    assert reply.WhichOneof("result") == "challenge"
    before = len(identity.mailbox.to(person.email))
    await identity.stub.SendSignInCode(
        pb.SendSignInCodeRequest(challenge_id=reply.challenge.challenge_id), timeout=TIMEOUT
    )
    mail = await next_mail(
        identity.mailbox, person.email, subject_is(*SIGN_IN_SUBJECTS), after=before
    )
    return reply.challenge.challenge_id, code_in(mail)


async def reset_link(identity: IdentityOnCluster, person: Person) -> str:
    before = len(await reset_mail(identity.mailbox, person.email, count=0))
    await identity.stub.RequestPasswordReset(
        pb.RequestPasswordResetRequest(identifier=person.email), timeout=TIMEOUT
    )
    return reset_token_in((await reset_mail(identity.mailbox, person.email, before + 1))[-1])


async def complete_reset(identity: IdentityOnCluster, token: str, password: str) -> None:
    await identity.stub.CompletePasswordReset(
        pb.CompletePasswordResetRequest(reset_token=token, new_password=password, client=client()),
        timeout=TIMEOUT,
    )


async def owner_resets(identity: IdentityOnCluster, person: Person) -> None:
    await complete_reset(identity, await reset_link(identity, person), NEW_PASSWORD)


async def operator_locks(identity: IdentityOnCluster, person: Person) -> None:
    await identity.operator.LockAccount(
        pb.LockAccountRequest(account_id=person.account_id, reason="case 7"), timeout=TIMEOUT
    )


async def operator_forces_a_reset(identity: IdentityOnCluster, person: Person) -> None:
    async for _ in identity.operator.ForceCredentialReset(
        pb.ForceCredentialResetRequest(account_ids=[person.account_id], reason="breach list"),
        timeout=TIMEOUT,
    ):
        pass


async def owner_changes_the_password(identity: IdentityOnCluster, person: Person) -> None:
    session = (await identity.login(person)).session
    await identity.stub.ChangePassword(
        pb.ChangePasswordRequest(current_password=person.password, new_password=NEW_PASSWORD),
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )


TAKE_BACKS: dict[str, Callable[[IdentityOnCluster, Person], Awaitable[None]]] = {
    "password reset": owner_resets,
    "password change": owner_changes_the_password,
    "operator lock": operator_locks,
    "forced reset": operator_forces_a_reset,
}


@pytest.mark.parametrize("take_back", list(TAKE_BACKS))
async def test_an_email_sign_in_begun_before_the_owner_takes_the_account_back_cannot_be_finished(
    identity: IdentityOnCluster, take_back: str
):
    person = await identity.register("hanako@example.jp")
    challenge_id, code = await emailed_sign_in_code(identity, person)

    await TAKE_BACKS[take_back](identity, person)

    late = await refused(
        identity.stub.VerifySecondFactor(
            pb.VerifySecondFactorRequest(
                challenge_id=challenge_id, email_code=code, client=ATTACKER
            ),
            timeout=TIMEOUT,
        )
    )
    assert late.code() == grpc.StatusCode.UNAUTHENTICATED
    assert late.details() == "invalid credentials"
    another_code = await refused(
        identity.stub.SendSignInCode(
            pb.SendSignInCodeRequest(challenge_id=challenge_id), timeout=TIMEOUT
        )
    )
    assert another_code.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_reset_link_issued_before_a_password_change_is_dead(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    token = await reset_link(identity, person)

    await owner_changes_the_password(identity, person)

    dead = await refused(complete_reset(identity, token, "the attacker's own passphrase 1"))
    assert dead.code() == grpc.StatusCode.FAILED_PRECONDITION
    person.password = NEW_PASSWORD
    assert (await identity.login(person)).HasField("session")


async def test_a_forced_reset_kills_the_earlier_reset_link_and_only_its_own_works(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    earlier = await reset_link(identity, person)

    await operator_forces_a_reset(identity, person)
    forced = reset_token_in((await reset_mail(identity.mailbox, person.email, 2))[-1])
    assert forced != earlier

    dead = await refused(complete_reset(identity, earlier, "the attacker's own passphrase 1"))
    assert dead.code() == grpc.StatusCode.FAILED_PRECONDITION
    await complete_reset(identity, forced, NEW_PASSWORD)


async def test_an_authenticator_app_enrolment_begun_in_an_ended_session_cannot_be_confirmed(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    first = (await identity.login(person)).session
    begun = await identity.stub.BeginTotpEnrollment(
        pb.BeginTotpEnrollmentRequest(), metadata=identity.bearer(first), timeout=TIMEOUT
    )

    await identity.stub.Logout(pb.LogoutRequest(), metadata=identity.bearer(first), timeout=TIMEOUT)

    # Whoever saw the secret in that session cannot finish it from another one.
    second = (await identity.login(person)).session
    late = await refused(
        identity.stub.ConfirmTotpEnrollment(
            pb.ConfirmTotpEnrollmentRequest(
                enrollment_id=begun.enrollment_id, code=await next_totp(begun.secret)
            ),
            metadata=identity.bearer(second),
            timeout=TIMEOUT,
        )
    )
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION
    factors = await identity.stub.ListFactors(
        pb.ListFactorsRequest(), metadata=identity.bearer(second), timeout=TIMEOUT
    )
    assert list(factors.factors) == []


async def test_a_step_up_and_a_passkey_registration_begun_in_a_session_end_with_it(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session
    step_up = await identity.stub.BeginStepUp(
        pb.BeginStepUpRequest(client=client()), metadata=identity.bearer(session), timeout=TIMEOUT
    )
    ceremony = await identity.stub.BeginPasskeyRegistration(
        pb.BeginPasskeyRegistrationRequest(client=client()),
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )

    await identity.stub.Logout(
        pb.LogoutRequest(), metadata=identity.bearer(session), timeout=TIMEOUT
    )

    pool = identity.cluster.running["identity"].pool
    open_challenge = await pool.fetchval(
        "select completed_at is null from challenges where id = $1",
        uuid.UUID(step_up.challenge_id),
    )
    open_ceremony = await pool.fetchval(
        "select completed_at is null from ceremonies where id = $1",
        uuid.UUID(ceremony.ceremony_id),
    )
    assert (open_challenge, open_ceremony) == (False, False)


async def test_a_contact_code_sent_before_a_password_reset_no_longer_verifies(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session
    added = await identity.stub.AddContact(
        pb.AddContactRequest(kind=pb.CONTACT_KIND_EMAIL, address="attacker@evil.example"),
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )
    code = code_in(
        await next_mail(identity.mailbox, "attacker@evil.example", lambda _: True, after=0)
    )

    await owner_resets(identity, person)

    person.password = NEW_PASSWORD
    owner = await identity.sign_in(person)
    late = await refused(
        identity.stub.VerifyContact(
            pb.VerifyContactRequest(contact_id=added.contact.contact_id, code=code),
            metadata=identity.bearer(owner),
            timeout=TIMEOUT,
        )
    )
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("take_back", ["operator lock", "forced reset", "password reset"])
async def test_a_refresh_token_of_a_revoked_session_is_refused(
    identity: IdentityOnCluster, take_back: str
):
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session

    await TAKE_BACKS[take_back](identity, person)

    dead = await refused(
        identity.stub.RefreshSession(
            pb.RefreshSessionRequest(
                refresh_token=session.refresh_token, client=client(person.device, person.ip)
            ),
            timeout=TIMEOUT,
        )
    )
    assert dead.code() == grpc.StatusCode.UNAUTHENTICATED
