"""Sign-in designed for credential stuffing, over real identity, risk and notify servers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import jwt
import pytest
from mamoru.identity.v1 import identity_pb2 as pb
from mamoru.risk.v1 import risk_pb2

from tests.e2e.identity.conftest import IdentityOnCluster
from tests.support.people import TIMEOUT, Person, client, next_totp


async def next_totp_for(person: Person) -> str:
    return await next_totp(person.totp_secret)


pytestmark = pytest.mark.asyncio


def hashes_computed(identity: IdentityOnCluster) -> int:
    servicer: Any = identity.cluster.running["identity"].app.servicers[0][1]
    return int(servicer.identity.hasher.computed)


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


async def test_a_replayed_password_from_a_new_device_gets_no_token_until_a_second_factor(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    session = await identity.sign_in_with_email_code(person)
    await identity.enrol_totp(person, session)

    # The attacker has the leaked password but not the phone.
    reply = await identity.login(person, device="attacker-phone", ip="198.51.100.7")
    assert reply.WhichOneof("result") == "challenge"
    assert pb.CHALLENGE_METHOD_TOTP in reply.challenge.methods
    wrong = await refused(
        identity.answer(
            person, reply.challenge.challenge_id, client("attacker-phone"), totp_code="000000"
        )
    )
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.details() == "invalid credentials"
    # The right password followed by a failed factor is told to the owner.
    notices = await identity.cluster.running["identity"].pool.fetch(
        "select payload from outbox where payload->>'kind' = 'NOTICE_KIND_SECOND_FACTOR_FAILED'"
    )
    assert [row["payload"]["account_id"] for row in notices] == [person.account_id]

    # The owner, on a new phone, passes with the authenticator app.
    session = await identity.sign_in_with_totp(person, device="new-phone")
    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    assert claims["sub"] == person.account_id
    assert claims["cnf"] == {"jkt": person.key("new-phone").thumbprint}
    assert "did" not in claims
    assert sorted(claims["amr"]) == ["password", "totp"]
    assert claims["acr"] == "2"
    assert claims["exp"] - claims["iat"] <= 600


async def test_a_deny_from_risk_costs_no_password_hash(identity: IdentityOnCluster):
    person = await identity.register("hanako@example.jp")
    risk = identity.cluster.stub("risk", as_="operator")
    await risk.SetPolicy(
        risk_pb2.SetPolicyRequest(
            country=risk_pb2.CountryChange(country_code="US", blocked=True), reason="drill"
        ),
        timeout=TIMEOUT,
    )
    us_ip = "8.8.8.8"
    assessor = identity.cluster.stub("risk", as_="identity")
    async with asyncio.timeout(TIMEOUT):
        while True:
            decision = (
                await assessor.AssessLogin(
                    risk_pb2.AssessLoginRequest(
                        identifier_hash="probe", client=client("probe", us_ip), method="password"
                    ),
                    timeout=TIMEOUT,
                )
            ).decision
            if decision.verdict == risk_pb2.VERDICT_DENY:
                break
            await asyncio.sleep(0.1)

    before = hashes_computed(identity)
    denied = await refused(identity.login(person, ip=us_ip))
    assert denied.code() == grpc.StatusCode.UNAUTHENTICATED
    assert denied.details() == "invalid credentials"
    assert hashes_computed(identity) == before

    # Allowed attempts always cost a hash, on unknown identifiers too.
    unknown = await refused(
        identity.stub.Login(
            pb.LoginRequest(
                identifier="nobody@example.jp", password="whatever it is", client=client()
            ),
            timeout=TIMEOUT,
        )
    )
    assert unknown.details() == denied.details()
    assert hashes_computed(identity) == before + 1


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_session(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    first = await identity.sign_in_with_email_code(person)
    second = await identity.refresh(person, first.refresh_token)
    assert second.session_id == first.session_id
    assert second.refresh_token != first.refresh_token

    # Even with the device's own proof, a spent refresh token is a second holder.
    stolen = await refused(identity.refresh(person, first.refresh_token))
    assert stolen.code() == grpc.StatusCode.UNAUTHENTICATED
    # The legitimate holder's newer refresh token and access token die with the family.
    newer = await refused(identity.refresh(person, second.refresh_token))
    assert newer.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = await refused(
        identity.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=identity.bearer(second), timeout=TIMEOUT
        )
    )
    assert listed.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_password_only_session_cannot_obtain_a_wallet_token(identity: IdentityOnCluster):
    person = await identity.register("hanako@example.jp")
    password_only = (await identity.login(person)).session
    assert password_only.assurance_level == 1
    denied = await refused(
        identity.stub.ExchangeToken(
            identity.exchange_request(person, password_only),
            metadata=identity.bearer(password_only),
            timeout=TIMEOUT,
        )
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

    # An email code is the same inbox as a reset: still one factor.
    by_email = await identity.sign_in_with_email_code(person, device="tablet")
    denied = await refused(
        identity.stub.ExchangeToken(
            identity.exchange_request(person, by_email, "tablet"),
            metadata=identity.bearer(by_email),
            timeout=TIMEOUT,
        )
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_password_and_totp_on_the_registered_device_obtain_a_pairwise_wallet_token(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session
    # The first factor, enrolled on the registration device, starts no cool-off.
    await identity.enrol_totp(person, session)
    strong = await identity.sign_in_with_totp(person, device="phone-2")
    exchanged = await identity.stub.ExchangeToken(
        identity.exchange_request(person, strong, "phone-2"),
        metadata=identity.bearer(strong),
        timeout=TIMEOUT,
    )
    claims = jwt.decode(exchanged.access_token, options={"verify_signature": False})
    assert claims["aud"] == "wallet"
    assert claims["sub"] != person.account_id
    uuid.UUID(claims["sub"])
    contacts = await identity.cluster.stub("identity", as_="notify").GetRegisteredContacts(
        pb.GetRegisteredContactsRequest(payer_id=claims["sub"]), timeout=TIMEOUT
    )
    assert contacts.account_id == person.account_id
    assert claims["cnf"] == {"jkt": person.key("phone-2").thumbprint}
    # Another device cannot use the session's token.
    elsewhere = await refused(
        identity.stub.ExchangeToken(
            identity.exchange_request(person, strong, "other-device"),
            metadata=identity.bearer(strong),
            timeout=TIMEOUT,
        )
    )
    assert elsewhere.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_when_risk_is_away_every_sign_in_needs_a_second_factor(identity: IdentityOnCluster):
    person = await identity.register("hanako@example.jp")
    await identity.cluster.stop("risk")
    reply = await identity.login(person)
    assert reply.WhichOneof("result") == "challenge"
    session = await identity.sign_in_with_email_code(person)
    assert session.access_token


async def test_step_up_with_totp_raises_a_password_session_to_level_two(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session
    await identity.enrol_totp(person, session)
    begun = await identity.stub.BeginStepUp(
        pb.BeginStepUpRequest(client=client()), metadata=identity.bearer(session), timeout=TIMEOUT
    )
    assert list(begun.methods) == [pb.CHALLENGE_METHOD_TOTP]
    stepped = (
        await identity.stub.StepUp(
            pb.StepUpRequest(
                challenge_id=begun.challenge_id, totp_code=await next_totp_for(person)
            ),
            metadata=identity.bearer(session),
            timeout=TIMEOUT,
        )
    ).session
    assert stepped.assurance_level == 2
    claims = jwt.decode(stepped.access_token, options={"verify_signature": False})
    assert sorted(claims["amr"]) == ["password", "totp"]
    exchanged = await identity.stub.ExchangeToken(
        identity.exchange_request(person, stepped),
        metadata=identity.bearer(stepped),
        timeout=TIMEOUT,
    )
    assert exchanged.access_token


async def test_a_recovery_code_signs_in_once_and_never_opens_the_wallet(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    await identity.enrol_totp(person, (await identity.login(person)).session)
    assert len(set(person.recovery_codes)) == 10

    async def recover(code: str, device: str = "new-phone") -> pb.SessionTokens:
        reply = await identity.login(person, device=device)
        return await identity.answer(
            person, reply.challenge.challenge_id, client(device), recovery_code=code
        )

    # Spelling does not matter; each code works once.
    session = await recover(person.recovery_codes[0].upper())
    assert session.assurance_level == 1
    denied = await refused(
        identity.stub.ExchangeToken(
            identity.exchange_request(person, session, "new-phone"),
            metadata=identity.bearer(session),
            timeout=TIMEOUT,
        )
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    again = await refused(recover(person.recovery_codes[0], device="another-phone"))
    assert again.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_registration_stops_while_risk_suspends_it(identity: IdentityOnCluster):
    await identity.cluster.stub("risk", as_="operator").SetPolicy(
        risk_pb2.SetPolicyRequest(registration_suspended=True, reason="bot wave"), timeout=TIMEOUT
    )
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                await identity.stub.Register(
                    pb.RegisterRequest(
                        email=f"bot{uuid.uuid4().hex[:6]}@example.jp",
                        password="a long enough passphrase",
                        client=client(ip="192.0.2.99"),
                    ),
                    timeout=TIMEOUT,
                )
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
                break
            await asyncio.sleep(0.2)
