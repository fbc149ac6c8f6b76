"""A local OpenID Connect provider: an outside party (LINE, Google, ...) that people
and attackers hold IDs at. It serves its JWKS over HTTP like a real provider and
signs ID tokens with its own key, so identity verifies them exactly as it would
a real provider's.

    provider = LocalOidcProvider()
    await provider.start()
    env = {"IDENTITY_OIDC_PROVIDERS": provider.config("line")}
    token = provider.id_token("line-user-1", nonce)
"""

from __future__ import annotations

import time

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from services.devstack.stack import free_port

ISSUER = "https://id.provider.test"
CLIENT_ID = "mamoru-app"


class LocalOidcProvider:
    """Serves ``/jwks`` on a free port and signs ES256 ID tokens."""

    def __init__(self, issuer: str = ISSUER, client_id: str = CLIENT_ID) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        jwk = {**ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True), "kid": "p1"}

        async def jwks(_: web.Request) -> web.Response:
            return web.json_response({"keys": [jwk]})

        app = web.Application()
        app.router.add_get("/jwks", jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def config(self, name: str) -> str:
        """The provider's entry for IDENTITY_OIDC_PROVIDERS under ``name``."""
        jwks_url = f"http://127.0.0.1:{self.port}/jwks"
        return f"{name}|{self.issuer}|{self.client_id}|{jwks_url}|{self.issuer}/authorize"

    def id_token(
        self,
        subject: str,
        nonce: str,
        *,
        audience: str | None = None,
        claims: dict[str, object] | None = None,
    ) -> str:
        """What the provider hands the app after its subject ``subject`` signed in;
        ``claims`` adds to (or overrides) the standard ones, e.g. ``email``."""
        now = int(time.time())
        payload: dict[str, object] = {
            "iss": self.issuer,
            "aud": audience or self.client_id,
            "sub": subject,
            "nonce": nonce,
            "iat": now,
            "exp": now + 300,
            **(claims or {}),
        }
        return jwt.encode(payload, self.key, algorithm="ES256", headers={"kid": "p1"})
