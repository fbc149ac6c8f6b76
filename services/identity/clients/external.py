"""External (OpenID Connect) identity providers: ID tokens checked with pyjwt against each
provider's published keys."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import jwt

from services.runtime.config import ConfigError

# Asymmetric algorithms only: an HS256 token would be "signed" with a public value.
ALGORITHMS = ["RS256", "ES256", "PS256", "EdDSA"]


@dataclass(frozen=True)
class Provider:
    name: str
    issuer: str
    client_id: str
    jwks_url: str
    authorization_endpoint: str


def parse_providers(entries: tuple[str, ...]) -> dict[str, Provider]:
    """``name|issuer|client_id|jwks_url|authorization_endpoint`` per entry."""
    providers: dict[str, Provider] = {}
    for entry in entries:
        parts = entry.split("|")
        if len(parts) != 5 or not all(parts):
            raise ConfigError(
                "IDENTITY_OIDC_PROVIDERS entries must be "
                "name|issuer|client_id|jwks_url|authorization_endpoint"
            )
        provider = Provider(*parts)
        providers[provider.name] = provider
    return providers


class InvalidIdToken(Exception):
    """The ID token cannot be accepted."""


class IdTokenVerifier:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._keys = jwt.PyJWKClient(provider.jwks_url, cache_jwk_set=True, lifespan=300, timeout=5)

    async def verify(self, token: str, *, nonce: str) -> dict[str, Any]:
        """The token's claims once issuer, audience, expiry, signature and nonce hold."""
        try:
            # PyJWKClient fetches over blocking urllib; keep it off the event loop.
            key = await asyncio.to_thread(self._keys.get_signing_key_from_jwt, token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self.provider.client_id,
                issuer=self.provider.issuer,
                options={"require": ["iss", "aud", "sub", "exp", "iat", "nonce"]},
                leeway=30,
            )
        except (jwt.PyJWTError, ValueError) as error:
            raise InvalidIdToken(str(error)[:200]) from None
        if claims.get("nonce") != nonce or not isinstance(claims.get("sub"), str):
            raise InvalidIdToken("nonce mismatch")
        return claims
