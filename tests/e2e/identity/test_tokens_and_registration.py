"""Signing keys, registration and the contacts notify resolves, over real servers."""

from __future__ import annotations

import json

import grpc
import pytest
from mamoru.identity.v1 import identity_pb2 as pb

from tests.e2e.identity.conftest import IdentityOnCluster, queued_code_notices
from tests.support.people import (
    TIMEOUT,
    client,
)

pytestmark = pytest.mark.asyncio


async def test_jwks_publishes_the_signing_key_and_the_next_one_before_it_signs(identity):
    reply = await identity.stub.GetJwks(pb.GetJwksRequest(), timeout=TIMEOUT)
    keys = json.loads(reply.jwks_json)["keys"]
    assert len(keys) == 2
    assert all(key["kty"] == "EC" and key["crv"] == "P-256" and "d" not in key for key in keys)
    stored = await identity.cluster.running["identity"].pool.fetch(
        "select kid, state, sealed_private_key from signing_keys"
    )
    assert {row["state"] for row in stored} == {"current", "next"}
    assert {row["kid"] for row in stored} == {key["kid"] for key in keys}
    assert all(b"PRIVATE KEY" not in row["sealed_private_key"] for row in stored)


async def test_registered_account_signs_in_from_its_registration_device(identity):
    person = await identity.register("hanako@example.jp", display_name="花子\n🌸")
    reply = await identity.login(person)
    # With risk answering ALLOW on the known device, the password alone opens a session.
    assert reply.HasField("session")
    assert reply.session.assurance_level == 1
    contacts = await identity.cluster.stub("identity", as_="notify").GetRegisteredContacts(
        pb.GetRegisteredContactsRequest(account_id=person.account_id), timeout=TIMEOUT
    )
    assert [(c.address, c.verified, c.primary) for c in contacts.contacts] == [
        ("hanako@example.jp", True, True)
    ]
    assert contacts.display_name == "花子\n🌸"


async def test_registering_a_taken_address_answers_the_same_and_tells_the_owner(identity):
    person = await identity.register("taro@example.jp")
    reply = await identity.stub.Register(
        pb.RegisterRequest(email="TARO@example.jp", password="another long passphrase here",
                           client=client("attacker")),
        timeout=TIMEOUT,
    )  # fmt: skip
    assert reply.HasField("code_expires_at")
    # No second verification code exists for the taken address; its owner is told instead.
    assert await queued_code_notices(identity.cluster, "NOTICE_KIND_CONTACT_VERIFICATION") == 1
    rows = await identity.cluster.running["identity"].pool.fetch(
        "select payload from outbox where payload->>'kind' = 'NOTICE_KIND_REGISTRATION_ATTEMPT'"
    )
    assert [row["payload"]["account_id"] for row in rows] == [person.account_id]


async def test_unverified_registration_cannot_sign_in(identity: IdentityOnCluster):
    await identity.stub.Register(
        pb.RegisterRequest(email="pending@example.jp", password="a long enough passphrase",
                           client=client()),
        timeout=TIMEOUT,
    )  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.stub.Login(
            pb.LoginRequest(identifier="pending@example.jp", password="a long enough passphrase",
                            client=client()),
            timeout=TIMEOUT,
        )  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == "invalid credentials"
    assert await queued_code_notices(identity.cluster, "NOTICE_KIND_CONTACT_VERIFICATION") == 1


async def test_weak_passwords_are_refused_naming_the_field(identity: IdentityOnCluster):
    for password in ("short", "1qaz2wsx3edc4rfv", "hanako-is-my-name-ok-yes"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await identity.stub.Register(
                pb.RegisterRequest(email="hanako@example.jp", password=password, client=client()),
                timeout=TIMEOUT,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "password" in refused.value.details()
