"""Who may add a second factor, and which factors a sign-in challenge offers.

The attacker of the incident holds a reused password and the victim's inbox, or
the victim's social ID. Once an account has a factor, none of those may change
its factors; while it has none, the password may, but away from the device the
account was registered on that ends every other session, tells the owner and
starts the cool-off, so the wallet stays shut to whoever did it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from mamoru.identity.v1 import identity_pb2 as pb

from tests.e2e.identity.checks import reason_of, refused
from tests.e2e.identity.conftest import IdentityOnCluster, start_identity
from tests.support.oidc import LocalOidcProvider
from tests.support.people import TIMEOUT, Person, bearer, client

pytestmark = pytest.mark.asyncio


async def factors(identity: IdentityOnCluster, session: pb.SessionTokens) -> list[pb.Factor]:
    reply = await identity.stub.ListFactors(
        pb.ListFactorsRequest(), metadata=bearer(session), timeout=TIMEOUT
    )
    return list(reply.factors)


async def enrolment_refusals(
    identity: IdentityOnCluster, person: Person, session: pb.SessionTokens, device: str
) -> list[grpc.aio.AioRpcError]:
    """Both ways of adding a factor, tried with ``session``: the refusals they got."""
    totp = await refused(
        identity.stub.BeginTotpEnrollment(
            pb.BeginTotpEnrollmentRequest(), metadata=bearer(session), timeout=TIMEOUT
        )
    )
    passkey = await refused(
        identity.stub.BeginPasskeyRegistration(
            pb.BeginPasskeyRegistrationRequest(client=client(device, person.ip)),
            metadata=bearer(session),
            timeout=TIMEOUT,
        )
    )
    return [totp, passkey]


def assert_step_up_required(refusals: list[grpc.aio.AioRpcError]) -> None:
    for refusal in refusals:
        assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(refusal) == "STEP_UP_REQUIRED"


async def test_a_first_factor_added_away_from_the_registration_device_keeps_the_wallet_shut(
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("hanako@example.jp", device="phone-1")
    owner = (await identity.login(person)).session
    # The password and a code from the inbox, on a laptop the account never used.
    stranger = await identity.sign_in_with_email_code(person, device="attacker-laptop")
    person.device = "attacker-laptop"
    await identity.enrol_totp(person, stranger)

    # Every other session ends and the cool-off starts: even at level 2 on that
    # laptop, no wallet token is issued, so the password and the inbox pay nothing.
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await identity.stub.ListFactors(
            pb.ListFactorsRequest(), metadata=bearer(owner), timeout=TIMEOUT
        )
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    strong = await identity.step_up(person, (await identity.login(person)).session)
    assert strong.assurance_level == 2
    with pytest.raises(grpc.aio.AioRpcError) as cooling:
        await identity.stub.ExchangeToken(
            identity.exchange_request(person, strong, "attacker-laptop"),
            metadata=bearer(strong),
            timeout=TIMEOUT,
        )
    assert cooling.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(cooling.value) == "COOLOFF"


async def test_a_first_factor_on_the_registration_device_opens_the_wallet_at_once(
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("hanako@example.jp", device="phone-1")
    own = (await identity.login(person)).session
    await identity.enrol_totp(person, own)
    assert len(await factors(identity, own)) == 1
    assert await identity.wallet_token(person)


async def test_a_second_factor_is_added_only_after_a_step_up_with_the_first(
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("hanako@example.jp")
    own = (await identity.login(person)).session
    await identity.enrol_totp(person, own)
    # Even on the registration device, once the account has a factor the password
    # alone no longer changes them.
    password_only = (await identity.login(person)).session
    assert_step_up_required(
        await enrolment_refusals(identity, person, password_only, person.device)
    )

    stepped = await identity.step_up(person, password_only)
    await identity.enrol_passkey(person, stepped)
    assert len(await factors(identity, stepped)) == 2


async def test_a_recovery_code_session_cannot_add_a_factor(identity: IdentityOnCluster) -> None:
    person = await identity.register("hanako@example.jp")
    await identity.enrol_totp(person, (await identity.login(person)).session)
    challenge = (await identity.login(person, device="new-phone")).challenge
    recovered = await identity.answer(
        person,
        challenge.challenge_id,
        client("new-phone", person.ip),
        recovery_code=person.recovery_codes[0],
    )

    assert_step_up_required(await enrolment_refusals(identity, person, recovered, "new-phone"))


async def test_an_account_with_a_second_factor_is_never_offered_an_inbox_code(
    identity: IdentityOnCluster,
) -> None:
    person = await identity.register("hanako@example.jp")
    without = (await identity.login(person, device="laptop")).challenge
    assert pb.CHALLENGE_METHOD_EMAIL_CODE in without.methods

    await identity.enrol_totp(person, (await identity.login(person)).session)
    challenge = (await identity.login(person, device="laptop")).challenge

    assert pb.CHALLENGE_METHOD_EMAIL_CODE not in challenge.methods
    assert pb.CHALLENGE_METHOD_TOTP in challenge.methods
    # The password and the mailbox together do not get around the authenticator app.
    sending = await refused(
        identity.stub.SendSignInCode(
            pb.SendSignInCodeRequest(challenge_id=challenge.challenge_id), timeout=TIMEOUT
        )
    )
    assert sending.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest_asyncio.fixture
async def with_line(cluster) -> AsyncIterator[tuple[IdentityOnCluster, LocalOidcProvider]]:
    provider = LocalOidcProvider()
    await provider.start()
    try:
        await start_identity(cluster, env={"IDENTITY_OIDC_PROVIDERS": provider.config("line")})
        yield IdentityOnCluster(cluster), provider
    finally:
        await provider.stop()


async def link_line(
    identity: IdentityOnCluster, provider: LocalOidcProvider, session: pb.SessionTokens
) -> None:
    nonce = (
        await identity.stub.BeginExternalLogin(
            pb.BeginExternalLoginRequest(provider="line", client=client()), timeout=TIMEOUT
        )
    ).nonce
    await identity.stub.LinkExternalIdentity(
        pb.LinkExternalIdentityRequest(
            provider="line", id_token=provider.id_token("line-user-1", nonce), nonce=nonce
        ),
        metadata=bearer(session),
        timeout=TIMEOUT,
    )


async def line_sign_in(
    identity: IdentityOnCluster, provider: LocalOidcProvider, device: str, ip: str
) -> pb.SessionTokens:
    where = client(device, ip)
    nonce = (
        await identity.stub.BeginExternalLogin(
            pb.BeginExternalLoginRequest(provider="line", client=where), timeout=TIMEOUT
        )
    ).nonce
    reply = await identity.stub.ExternalLogin(
        pb.ExternalLoginRequest(
            provider="line",
            id_token=provider.id_token("line-user-1", nonce),
            nonce=nonce,
            client=where,
        ),
        timeout=TIMEOUT,
    )
    session: pb.SessionTokens = reply.session
    return session


async def test_an_external_id_session_cannot_add_a_factor_even_on_the_registration_device(
    with_line: tuple[IdentityOnCluster, LocalOidcProvider],
) -> None:
    identity, provider = with_line
    person = await identity.register("hanako@example.jp", device="phone-1")
    await link_line(identity, provider, (await identity.login(person)).session)

    external = await line_sign_in(identity, provider, "phone-1", person.ip)

    assert_step_up_required(await enrolment_refusals(identity, person, external, "phone-1"))
    assert await factors(identity, external) == []


async def test_an_external_id_sign_in_does_not_make_its_device_known_to_the_password(
    with_line: tuple[IdentityOnCluster, LocalOidcProvider],
) -> None:
    identity, provider = with_line
    person = await identity.register("hanako@example.jp", device="phone-1")
    await link_line(identity, provider, (await identity.login(person)).session)

    # Whoever holds the LINE account signs in from their own phone...
    await line_sign_in(identity, provider, "attacker-phone", person.ip)
    # ...and the password from that phone is still challenged as a new device.
    reply = await identity.login(person, device="attacker-phone")

    assert reply.HasField("challenge")
