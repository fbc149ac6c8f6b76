"""Passkeys end to end, with a software authenticator producing real WebAuthn objects."""

from __future__ import annotations

import grpc
import jwt
import pytest
from mamoru.identity.v1 import identity_pb2 as pb

from tests.e2e.identity.conftest import IdentityOnCluster
from tests.support.authenticator import SoftwareAuthenticator
from tests.support.people import TIMEOUT, Person, client, reset_mail, reset_token_in

pytestmark = pytest.mark.asyncio


async def register_passkey(
    identity: IdentityOnCluster, person: Person, session: pb.SessionTokens, device: str = "phone-1"
) -> tuple[SoftwareAuthenticator, pb.Factor]:
    """A new passkey for ``person``, from the device ``session`` is bound to (its key
    proves itself, as the app does)."""
    authenticator = SoftwareAuthenticator()
    begun = await identity.stub.BeginPasskeyRegistration(
        pb.BeginPasskeyRegistrationRequest(client=client(device)),
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )
    finished = await identity.stub.FinishPasskeyRegistration(
        pb.FinishPasskeyRegistrationRequest(
            ceremony_id=begun.ceremony_id,
            attestation_json=authenticator.create(begun.options_json),
            name="iPhone",
            client=client(device),
            device_proof=person.session_proof("FinishPasskeyRegistration", session),
        ),
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )
    return authenticator, finished.factor


async def passkey_login(
    identity: IdentityOnCluster,
    person: Person,
    authenticator: SoftwareAuthenticator,
    device: str = "phone-1",
    sign_count: int | None = None,
) -> pb.SessionTokens:
    begun = await identity.stub.BeginPasskeyLogin(
        pb.BeginPasskeyLoginRequest(
            client=client(device), device_proof=person.proof("BeginPasskeyLogin", "", device)
        ),
        timeout=TIMEOUT,
    )
    finished = await identity.stub.FinishPasskeyLogin(
        pb.FinishPasskeyLoginRequest(
            ceremony_id=begun.ceremony_id,
            assertion_json=authenticator.get(begun.options_json, sign_count=sign_count),
            client=client(device),
            device_proof=person.proof("FinishPasskeyLogin", begun.ceremony_id, device),
        ),
        timeout=TIMEOUT,
    )
    session: pb.SessionTokens = finished.session
    return session


async def test_a_passkey_registers_and_signs_in_without_a_username_at_level_two(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session
    authenticator, factor = await register_passkey(identity, person, session)
    assert factor.method == pb.CHALLENGE_METHOD_PASSKEY
    assert factor.name == "iPhone"

    signed_in = await passkey_login(identity, person, authenticator)
    assert signed_in.assurance_level == 2
    claims = jwt.decode(signed_in.access_token, options={"verify_signature": False})
    assert claims["sub"] == person.account_id
    assert claims["amr"] == ["passkey"]
    # The first factor came from the registration device: no cool-off, the wallet opens.
    exchanged = await identity.stub.ExchangeToken(
        identity.exchange_request(person, signed_in),
        metadata=identity.bearer(signed_in),
        timeout=TIMEOUT,
    )
    assert exchanged.access_token


async def test_a_passkey_answers_a_new_device_challenge(identity: IdentityOnCluster):
    person = await identity.register("hanako@example.jp")
    authenticator, _ = await register_passkey(
        identity, person, (await identity.login(person)).session
    )
    reply = await identity.login(person, device="laptop")
    assert pb.CHALLENGE_METHOD_PASSKEY in reply.challenge.methods
    challenge_id = reply.challenge.challenge_id
    begun = await identity.stub.BeginPasskeyLogin(
        pb.BeginPasskeyLoginRequest(
            challenge_id=challenge_id,
            client=client("laptop"),
            device_proof=person.proof("BeginPasskeyLogin", challenge_id, "laptop"),
        ),
        timeout=TIMEOUT,
    )
    answered = await identity.answer(
        person,
        challenge_id,
        client("laptop"),
        passkey_assertion_json=authenticator.get(begun.options_json),
    )
    assert answered.assurance_level == 2


async def test_a_signature_counter_going_backwards_suspends_the_passkey_and_tells_the_owner(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session
    authenticator, factor = await register_passkey(identity, person, session)
    await passkey_login(identity, person, authenticator, sign_count=5)

    with pytest.raises(grpc.aio.AioRpcError) as cloned:
        await passkey_login(identity, person, authenticator, sign_count=3)
    assert cloned.value.code() == grpc.StatusCode.UNAUTHENTICATED

    factors = await identity.stub.ListFactors(
        pb.ListFactorsRequest(), metadata=identity.bearer(session), timeout=TIMEOUT
    )
    assert [(f.factor_id, f.suspended) for f in factors.factors] == [(factor.factor_id, True)]
    with pytest.raises(grpc.aio.AioRpcError):
        await passkey_login(identity, person, authenticator, sign_count=9)
    notices = await identity.cluster.running["identity"].pool.fetch(
        "select payload from outbox where payload->>'kind' = 'NOTICE_KIND_PASSKEY_CLONED'"
    )
    assert [row["payload"]["account_id"] for row in notices] == [person.account_id]


async def test_after_a_reset_only_a_passkey_enrolled_before_it_opens_the_wallet(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    owners_key, _ = await register_passkey(identity, person, (await identity.login(person)).session)

    await identity.stub.RequestPasswordReset(
        pb.RequestPasswordResetRequest(identifier=person.email), timeout=TIMEOUT
    )
    token = reset_token_in((await reset_mail(identity.mailbox, person.email))[-1])
    await identity.stub.CompletePasswordReset(
        pb.CompletePasswordResetRequest(
            reset_token=token, new_password="someone else's passphrase", client=client("x")
        ),
        timeout=TIMEOUT,
    )

    session = await passkey_login(identity, person, owners_key)
    refused = await refused_exchange(identity, person, session)
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION

    # A passkey enrolled during the cool-off (as someone holding the mailbox would) does not help.
    newcomer, _ = await register_passkey(identity, person, session)
    step = await identity.stub.BeginStepUp(
        pb.BeginStepUpRequest(client=client()), metadata=identity.bearer(session), timeout=TIMEOUT
    )
    refused = await refused_exchange(
        identity, person, session, step.challenge_id, newcomer.get(step.passkey_options_json)
    )
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION

    step = await identity.stub.BeginStepUp(
        pb.BeginStepUpRequest(client=client()), metadata=identity.bearer(session), timeout=TIMEOUT
    )
    request = identity.exchange_request(person, session)
    request.challenge_id = step.challenge_id
    request.passkey_assertion_json = owners_key.get(step.passkey_options_json)
    exchanged = await identity.stub.ExchangeToken(
        request,
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )
    assert jwt.decode(exchanged.access_token, options={"verify_signature": False})["aud"] == (
        "wallet"
    )


async def refused_exchange(
    identity: IdentityOnCluster,
    person: Person,
    session: pb.SessionTokens,
    challenge_id: str = "",
    assertion: str = "",
) -> grpc.aio.AioRpcError:
    request = identity.exchange_request(person, session)
    request.challenge_id = challenge_id
    request.passkey_assertion_json = assertion
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.stub.ExchangeToken(
            request,
            metadata=identity.bearer(session),
            timeout=TIMEOUT,
        )
    return refused.value
