"""External IDs against a local OpenID Connect provider that signs with its own keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from mamoru.identity.v1 import identity_pb2 as pb
from mamoru.risk.v1 import risk_pb2

from services.devstack.stack import free_port
from tests.e2e.identity.conftest import IdentityOnCluster, start_identity
from tests.support.people import TIMEOUT, client

pytestmark = pytest.mark.asyncio

ISSUER = "https://id.provider.test"
CLIENT_ID = "mamoru-app"


class LocalProvider:
    """Serves a JWKS like a real OIDC provider and signs ID tokens with its key."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        jwk = {**ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True), "kid": "p1"}

        async def jwks(_: web.Request) -> web.Response:
            return web.json_response({"keys": [jwk]})

        app = web.Application()
        app.router.add_get("/jwks", jwks)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def config(self, name: str) -> str:
        jwks_url = f"http://127.0.0.1:{self.port}/jwks"
        return f"{name}|{ISSUER}|{CLIENT_ID}|{jwks_url}|{ISSUER}/authorize"

    def id_token(self, subject: str, nonce: str, *, audience: str = CLIENT_ID) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER, "aud": audience, "sub": subject, "nonce": nonce,
            "iat": now, "exp": now + 300,
        }  # fmt: skip
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "p1"})


@pytest_asyncio.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    running = LocalProvider()
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def nonce(identity: IdentityOnCluster) -> str:
    reply = await identity.stub.BeginExternalLogin(
        pb.BeginExternalLoginRequest(provider="line", client=client()), timeout=TIMEOUT
    )
    assert reply.authorization_endpoint == f"{ISSUER}/authorize"
    return str(reply.nonce)


async def test_an_external_id_signs_in_at_level_one_and_never_opens_the_wallet(cluster, provider):
    await start_identity(cluster, env={"IDENTITY_OIDC_PROVIDERS": provider.config("line")})
    identity = IdentityOnCluster(cluster)
    person = await identity.register("hanako@example.jp")
    session = (await identity.login(person)).session
    link_nonce = await nonce(identity)
    await identity.stub.LinkExternalIdentity(
        pb.LinkExternalIdentityRequest(
            provider="line", id_token=provider.id_token("line-user-1", link_nonce), nonce=link_nonce
        ),
        metadata=identity.bearer(session),
        timeout=TIMEOUT,
    )

    login_nonce = await nonce(identity)
    token = provider.id_token("line-user-1", login_nonce)
    external = (
        await identity.stub.ExternalLogin(
            pb.ExternalLoginRequest(
                provider="line", id_token=token, nonce=login_nonce, client=client()
            ),
            timeout=TIMEOUT,
        )
    ).session
    assert external.assurance_level == 1
    claims = jwt.decode(external.access_token, options={"verify_signature": False})
    assert (claims["sub"], claims["amr"]) == (person.account_id, ["external"])
    with pytest.raises(grpc.aio.AioRpcError) as wallet:
        await identity.stub.ExchangeToken(
            identity.exchange_request(person, external),
            metadata=identity.bearer(external),
            timeout=TIMEOUT,
        )
    assert wallet.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # The same token and nonce cannot be replayed, and a token for another client is refused.
    for bad_token, bad_nonce in (
        (token, login_nonce),
        (provider.id_token("line-user-1", n := await nonce(identity), audience="other"), n),
        (provider.id_token("line-user-2", n := await nonce(identity)), n),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await identity.stub.ExternalLogin(
                pb.ExternalLoginRequest(
                    provider="line", id_token=bad_token, nonce=bad_nonce, client=client()
                ),
                timeout=TIMEOUT,
            )
        assert refused.value.details() == "invalid credentials"


async def test_a_password_and_an_inbox_code_from_a_new_device_cannot_link_an_external_id(
    cluster, provider
):
    await start_identity(cluster, env={"IDENTITY_OIDC_PROVIDERS": provider.config("line")})
    identity = IdentityOnCluster(cluster)
    person = await identity.register("taro@example.jp")
    # The attacker holds the password and reads the inbox, from a phone of their own.
    stolen = await identity.sign_in_with_email_code(person, device="attacker-phone")
    link_nonce = await nonce(identity)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.stub.LinkExternalIdentity(
            pb.LinkExternalIdentityRequest(
                provider="line",
                id_token=provider.id_token("attacker-line", link_nonce),
                nonce=link_nonce,
            ),
            metadata=identity.bearer(stolen),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    login_nonce = await nonce(identity)
    with pytest.raises(grpc.aio.AioRpcError) as not_linked:
        await identity.stub.ExternalLogin(
            pb.ExternalLoginRequest(
                provider="line",
                id_token=provider.id_token("attacker-line", login_nonce),
                nonce=login_nonce,
                client=client("attacker-phone"),
            ),
            timeout=TIMEOUT,
        )
    assert not_linked.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_risk_can_suspend_sign_in_with_one_provider(cluster, provider):
    await start_identity(cluster, env={"IDENTITY_OIDC_PROVIDERS": provider.config("line")})
    identity = IdentityOnCluster(cluster)
    await nonce(identity)
    await cluster.stub("risk", as_="operator").SetPolicy(
        risk_pb2.SetPolicyRequest(
            external_login=risk_pb2.ExternalLoginChange(provider="line", suspended=True),
            reason="provider breach",
        ),
        timeout=TIMEOUT,
    )
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                await nonce(identity)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
                break
            await asyncio.sleep(0.1)
