"""A known device is one that proves its key: a copied device id or proof counts as new.

Over real identity, risk and notify servers; the attacker knows what a log line or
a token shows (the device's label and its key thumbprint) and the right password.
"""

from __future__ import annotations

import grpc
import jwt
import pytest
from mamoru.identity.v1 import identity_pb2 as pb
from mamoru.identity.v1 import identity_pb2_grpc

from services.devstack.stack import free_port
from services.identity.bootstrap import MIGRATIONS, build
from services.identity.settings import IdentitySettings
from services.runtime.config import load_settings
from services.runtime.device_proof import DeviceKey
from services.runtime.server import start_service
from services.runtime.tls import load_tls, secure_channel
from tests.e2e.identity.checks import reason_of, refused
from tests.e2e.identity.conftest import IDENTITY_ENV, IdentityOnCluster
from tests.support.people import TIMEOUT, Person, client, next_totp

pytestmark = pytest.mark.asyncio

ATTACKER_IP = "198.51.100.7"


def claims_of(token: str) -> dict[str, object]:
    decoded: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return decoded


async def login_as_attacker(
    identity: IdentityOnCluster, person: Person, *, device: str, device_proof: str
) -> pb.LoginResponse:
    """The owner's identifier and password, from the attacker's machine."""
    reply: pb.LoginResponse = await identity.stub.Login(
        pb.LoginRequest(
            identifier=person.email,
            password=person.password,
            client=client(device, ATTACKER_IP),
            device_proof=device_proof,
        ),
        timeout=TIMEOUT,
    )
    return reply


async def new_device_notices(identity: IdentityOnCluster, person: Person) -> int:
    """New-device sign-in notices identity queued for the person."""
    count: int = await identity.cluster.running["identity"].pool.fetchval(
        "select count(*) from outbox where payload->>'kind' = 'NOTICE_KIND_NEW_DEVICE_SIGN_IN'"
        " and payload->>'account_id' = $1",
        person.account_id,
    )
    return count


async def test_a_stolen_device_id_with_the_right_password_gets_the_new_device_treatment(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    # The owner's phone proves its key: the password alone opens a session there.
    owners = await identity.login(person)
    assert owners.WhichOneof("result") == "session"
    phone_key = person.key().thumbprint
    assert claims_of(owners.session.access_token)["cnf"] == {"jkt": phone_key}

    attempts = {
        "the phone's label, no proof": (person.device, ""),
        "the key's thumbprint as a label": (phone_key, ""),
        "the phone's label, the attacker's own key": (
            person.device,
            DeviceKey().proof("Login", person.email),
        ),
        "a proof for another call by the attacker's key": (
            person.device,
            DeviceKey().proof("VerifySecondFactor", person.email),
        ),
        "garbage where the proof goes": (person.device, "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"),
    }
    for what, (device, proof) in attempts.items():
        reply = await login_as_attacker(identity, person, device=device, device_proof=proof)
        assert reply.WhichOneof("result") == "challenge", what
        # Every one of them looks exactly like any new device: the inbox code is asked.
        assert list(reply.challenge.methods) == [pb.CHALLENGE_METHOD_EMAIL_CODE], what

    # None of them became a device of the account.
    devices = await identity.stub.ListDevices(
        pb.ListDevicesRequest(), metadata=identity.bearer(owners.session), timeout=TIMEOUT
    )
    assert [device.device_id for device in devices.devices] == [phone_key]
    # And the owner's phone is still known.
    assert (await identity.login(person)).WhichOneof("result") == "session"


async def test_a_replayed_proof_with_the_right_password_gets_the_new_device_treatment(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    seen = person.proof("Login", person.email)
    first = await identity.login(person, device_proof=seen)
    assert first.WhichOneof("result") == "session"

    # The whole request, proof and all, sent again (a log line, a proxy, a captured call).
    replayed = await login_as_attacker(identity, person, device=person.device, device_proof=seen)
    assert replayed.WhichOneof("result") == "challenge"
    # A challenge begun with a copied proof is bound to no key: the real device's
    # answer cannot be made to finish it for someone else, nor a proofless one to
    # pass for the phone.
    events = await identity.operator.GetSecurityLog(
        pb.GetSecurityLogRequest(account_id=person.account_id), timeout=TIMEOUT
    )
    asked = [e for e in events.events if e.kind == "login.second_factor_required"]
    assert [e.device_id for e in asked] == [f"unproven:{person.device}"]


async def test_a_proof_spent_at_one_replica_is_refused_by_another(identity: IdentityOnCluster):
    person = await identity.register("hanako@example.jp")
    cluster = identity.cluster
    grpc_port, health_port = free_port(), free_port()
    env = await cluster._environment(
        "identity",
        {
            **IDENTITY_ENV,
            "IDENTITY_GRPC_PORT": str(grpc_port),
            "IDENTITY_HEALTH_PORT": str(health_port),
        },
    )
    replica = await start_service(
        "identity", load_settings(IdentitySettings, env), MIGRATIONS, build
    )
    channel = secure_channel(
        f"127.0.0.1:{grpc_port}", load_tls(cluster.tls_dir, "gateway"), server_name="identity"
    )
    try:
        other = identity_pb2_grpc.IdentityServiceStub(channel)
        proof = person.proof("Login", person.email)
        request = pb.LoginRequest(
            identifier=person.email,
            password=person.password,
            client=client(person.device, person.ip),
            device_proof=proof,
        )
        assert (await identity.stub.Login(request, timeout=TIMEOUT)).WhichOneof("result") == (
            "session"
        )
        again = await other.Login(request, timeout=TIMEOUT)
        assert again.WhichOneof("result") == "challenge"
        # The other replica knows the phone all the same, from a fresh proof.
        request.device_proof = person.proof("Login", person.email)
        assert (await other.Login(request, timeout=TIMEOUT)).WhichOneof("result") == "session"
    finally:
        await channel.close()
        await replica.stop(grace=1.0)


async def test_a_session_without_a_proven_key_has_no_device_in_its_token_and_no_wallet(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    await identity.enrol_totp(person, (await identity.login(person)).session)
    told_before = await new_device_notices(identity, person)
    # The attacker has the password and the authenticator's code, but not the phone's key.
    reply = await login_as_attacker(identity, person, device=person.device, device_proof="")
    answered = await identity.stub.VerifySecondFactor(
        pb.VerifySecondFactorRequest(
            challenge_id=reply.challenge.challenge_id,
            totp_code=await next_totp(person.totp_secret),
            client=client(person.device, ATTACKER_IP),
        ),
        timeout=TIMEOUT,
    )
    session = answered.session
    assert session.assurance_level == 2
    # Its phone's name notwithstanding, the owner hears of a sign-in from a new device.
    assert await new_device_notices(identity, person) == told_before + 1
    claims = claims_of(session.access_token)
    assert "cnf" not in claims and "did" not in claims
    # Whatever it shows, such a session never opens the wallet.
    for proof in ("", person.proof("ExchangeToken", session.access_token)):
        denied = await refused(
            identity.stub.ExchangeToken(
                pb.ExchangeTokenRequest(
                    audience="wallet",
                    client=client(person.device, ATTACKER_IP),
                    device_proof=proof,
                ),
                metadata=identity.bearer(session),
                timeout=TIMEOUT,
            )
        )
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(denied) == "DEVICE_NOT_REGISTERED"


async def test_a_stolen_group_token_becomes_a_wallet_token_only_with_the_devices_fresh_proof(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    await identity.enrol_totp(person, (await identity.login(person)).session)
    strong = await identity.step_up(person, (await identity.login(person)).session)
    owners_request = identity.exchange_request(person, strong)

    attempts = {
        "no proof": "",
        "the attacker's key": DeviceKey().proof("ExchangeToken", strong.access_token),
        "the phone's proof for another token": person.proof("ExchangeToken", "another token"),
    }
    for what, proof in attempts.items():
        denied = await refused(
            identity.stub.ExchangeToken(
                pb.ExchangeTokenRequest(
                    audience="wallet", client=client(person.device, ATTACKER_IP), device_proof=proof
                ),
                metadata=identity.bearer(strong),
                timeout=TIMEOUT,
            )
        )
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, what

    exchanged = await identity.stub.ExchangeToken(
        owners_request, metadata=identity.bearer(strong), timeout=TIMEOUT
    )
    wallet_claims = claims_of(exchanged.access_token)
    assert wallet_claims["aud"] == "wallet"
    assert wallet_claims["cnf"] == {"jkt": person.key().thumbprint}
    assert "did" not in wallet_claims
    # The owner's own request, replayed, proves nothing a second time.
    replayed = await refused(
        identity.stub.ExchangeToken(
            owners_request, metadata=identity.bearer(strong), timeout=TIMEOUT
        )
    )
    assert replayed.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_refresh_token_shown_without_its_devices_key_ends_the_session(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session
    stolen = await refused(
        identity.stub.RefreshSession(
            pb.RefreshSessionRequest(
                refresh_token=session.refresh_token, client=client(person.device, ATTACKER_IP)
            ),
            timeout=TIMEOUT,
        )
    )
    assert stolen.code() == grpc.StatusCode.UNAUTHENTICATED
    # Two holders of one refresh token: the owner signs in again, as after a reuse.
    ended = await refused(identity.refresh(person, session.refresh_token))
    assert ended.code() == grpc.StatusCode.UNAUTHENTICATED

    fresh = (await identity.login(person)).session
    renewed = await identity.refresh(person, fresh.refresh_token)
    assert claims_of(renewed.access_token)["cnf"] == {"jkt": person.key().thumbprint}


async def test_a_proof_too_long_to_be_one_is_refused_naming_the_field(
    identity: IdentityOnCluster,
):
    person = await identity.register("hanako@example.jp")
    oversized = await refused(identity.login(person, device_proof="x" * 5000))
    assert oversized.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "device_proof" in oversized.details()
    # Refused at the edge: nothing was asked of risk or the password, the phone is still known.
    assert (await identity.login(person)).WhichOneof("result") == "session"
