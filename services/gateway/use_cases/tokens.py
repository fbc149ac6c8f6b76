"""OAuth2 client credentials (RFC 6749 §4.4) with client secrets or private_key_jwt
(RFC 7523), issuing short-lived JWT access tokens (RFC 9068); all through authlib.

authlib's authorization server is synchronous, so a token request runs in a
worker thread: the argon2 check of a secret stays off the event loop, and the
two look-ups authlib asks for (the client, a fresh ``jti``) are handed back to
the loop and awaited there.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from argon2.exceptions import InvalidHashError, VerificationError
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6749.util import extract_basic_authorization, scope_to_list
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

from services.gateway.domain.partners import SCOPES, Partner, live_credentials
from services.gateway.use_cases.partners import SECRET_HASHER

ALG = "HS256"
TOKEN_TYPE = "at+jwt"  # noqa: S105 - a JWT "typ", not a secret
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
ASSERTION_METHOD = "private_key_jwt"
MAX_ASSERTION_SECONDS = 300
_T = TypeVar("_T")


@dataclass(frozen=True)
class AccessToken:
    """A verified access token: who it was issued to and what it allows."""

    partner_id: uuid.UUID
    credential_id: uuid.UUID  # the secret or key that minted it: removing that ends it
    scopes: frozenset[str]
    expires_at: int


class TokenInvalid(Exception):
    pass


class _Client(ClientMixin):
    def __init__(self, partner: Partner) -> None:
        self.partner = partner
        self.credential_id: uuid.UUID | None = None  # set by the check that succeeded

    def get_client_id(self) -> str:
        return self.partner.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return " ".join(sorted(self.partner.scopes))
        return " ".join(s for s in scope_to_list(scope) if s in self.partner.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        for credential in live_credentials(self.partner, "secret"):
            try:
                assert credential.secret_hash is not None
                if SECRET_HASHER.verify(credential.secret_hash, client_secret):
                    self.credential_id = credential.credential_id
                    return True
            except (VerificationError, InvalidHashError):
                continue
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if method in SECRET_METHODS:
            return bool(live_credentials(self.partner, "secret"))
        if method == ASSERTION_METHOD:
            return bool(live_credentials(self.partner, "key"))
        return False

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class _Grant(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, ASSERTION_METHOD]


class _Request(OAuth2Request):
    def __init__(self, uri: str, form: dict[str, str], headers: Mapping[str, str]) -> None:
        super().__init__("POST", uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


class TokenService:
    """The token endpoint's logic and the resource side's token check."""

    def __init__(
        self,
        *,
        issuer: str,
        signing_key: bytes,
        token_seconds: int,
        find_partner: Callable[[str], Awaitable[Partner | None]],
        remember_jti: Callable[[uuid.UUID, str, float], Awaitable[bool]],
        count_attempt: Callable[[uuid.UUID], Awaitable[float | None]],
    ) -> None:
        self.issuer = issuer
        self.token_url = f"{issuer}/oauth/token"
        self._key = OctKey.import_key(signing_key)
        self._jwk = {
            "kty": "oct",
            "k": base64.urlsafe_b64encode(signing_key).rstrip(b"=").decode(),
            "alg": ALG,
        }
        self._token_seconds = token_seconds
        self._find_partner = find_partner
        self._remember_jti = remember_jti
        self._count_attempt = count_attempt

    def _server(self, loop: asyncio.AbstractEventLoop) -> AuthorizationServer:
        def on_loop(coroutine: Awaitable[_T]) -> _T:
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=10)  # type: ignore[arg-type]

        service = self

        class Server(AuthorizationServer):
            def query_client(self, client_id: str) -> _Client | None:
                partner = on_loop(service._find_partner(client_id))
                return None if partner is None else _Client(partner)

            def create_oauth2_request(self, request: Any) -> Any:
                return request  # already built from the HTTP request by token_response

            def save_token(self, token: dict[str, Any], request: Any) -> None:
                return None  # self-contained JWTs; nothing to store

            def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
                return status, body, headers

            def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
                return None

        class Assertion(JWTBearerClientAssertion):
            CLIENT_AUTH_METHOD = ASSERTION_METHOD

            def verify_claims(self, claims: Any) -> None:
                # A long-lived assertion is a bearer credential in all but name, and its
                # jti would have to be kept as long (RFC 7523 §3, item 4 allows refusing it).
                expires = claims.get("exp")
                if (
                    isinstance(expires, int | float)
                    and expires > time.time() + MAX_ASSERTION_SECONDS
                ):
                    raise InvalidClientError(
                        description=f"the assertion must expire within {MAX_ASSERTION_SECONDS} s"
                    )
                super().verify_claims(claims)

            def get_audiences(self) -> list[str]:
                return [service.token_url, service.issuer]

            def resolve_client_public_key(self, client: _Client) -> KeySet:
                self.client = client
                keys: list[Any] = [c.public_jwk for c in live_credentials(client.partner, "key")]
                return KeySet.import_key_set({"keys": keys})

            def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
                # Key by key rather than against the whole set, to learn which key
                # signed: the access token names it (this object serves one request).
                for credential in live_credentials(self.client.partner, "key"):
                    jwk: Any = credential.public_jwk
                    keys = KeySet.import_key_set({"keys": [jwk]})
                    try:
                        token = jwt.decode(assertion, keys)
                    except JoseError:
                        continue
                    self.verify_claims(token.claims)
                    self.client.credential_id = credential.credential_id
                    return token.claims
                raise InvalidClientError(description="the assertion's signature is not valid")

            def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
                partner_id = uuid.UUID(str(claims["sub"]))
                return on_loop(service._remember_jti(partner_id, str(jti), float(claims["exp"])))

        class Generator(JWTBearerTokenGenerator):
            def get_jwks(self) -> dict[str, Any]:
                return service._jwk

            def get_audiences(self, client: Any, user: Any, scope: Any) -> str:
                return service.issuer

            def get_extra_claims(
                self, client: Any, grant_type: Any, user: Any, scope: Any
            ) -> dict[str, Any]:
                assert isinstance(client, _Client) and client.credential_id is not None
                return {"cid": str(client.credential_id)}

        server = Server(scopes_supported=list(SCOPES))
        server.register_grant(_Grant)
        server.register_client_auth_method(ASSERTION_METHOD, Assertion(leeway=5))
        server.register_token_generator(
            "default",
            Generator(
                issuer=self.issuer,
                alg=ALG,
                expires_generator=lambda client, grant_type: self._token_seconds,
            ),
        )
        return server

    @staticmethod
    def claimed_client(form: Mapping[str, str], headers: Mapping[str, str]) -> uuid.UUID | None:
        """The client a token request says it is, before anything is verified."""
        client_id, _ = extract_basic_authorization(headers)
        client_id = client_id or form.get("client_id")
        assertion = form.get("client_assertion")
        if not client_id and assertion:
            try:
                _, claims = JWTBearerClientAssertion().extract_assertion(assertion)
            except InvalidClientError:
                return None
            client_id = claims.get("sub")
        try:
            return uuid.UUID(str(client_id)) if client_id else None
        except ValueError:
            return None

    async def token_response(
        self, form: dict[str, str], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """(status, JSON body, headers) exactly as RFC 6749 §5.1 and §5.2 put them.

        ``headers`` must look names up case-insensitively, as HTTP headers are.
        Attempts per client are limited: checking a secret costs an argon2 hash,
        which nobody may make the gateway compute without bound.
        """
        claimed = self.claimed_client(form, headers)
        if claimed is not None:
            retry_after = await self._count_attempt(claimed)
            if retry_after is not None:
                return (
                    429,
                    {
                        "error": "temporarily_unavailable",
                        "error_description": "too many token requests for this client",
                    },
                    [("Retry-After", str(max(1, int(retry_after + 0.999))))],
                )
        loop = asyncio.get_running_loop()
        server = self._server(loop)
        request = _Request(self.token_url, form, headers)
        status, body, response_headers = await asyncio.to_thread(
            server.create_token_response, request
        )
        return status, dict(body), list(response_headers)

    def verify(self, token: str) -> AccessToken:
        try:
            decoded = jwt.decode(token, self._key, algorithms=[ALG])
        except (JoseError, ValueError) as error:
            raise TokenInvalid(str(error)) from None
        if decoded.header.get("typ") != TOKEN_TYPE:
            raise TokenInvalid("not an access token")
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.issuer},
            exp={"essential": True},
            sub={"essential": True},
            cid={"essential": True},
        )
        try:
            registry.validate(decoded.claims)
        except JoseError as error:
            raise TokenInvalid(str(error)) from None
        try:
            partner_id = uuid.UUID(str(decoded.claims["sub"]))
            credential_id = uuid.UUID(str(decoded.claims["cid"]))
        except ValueError:
            raise TokenInvalid("bad subject or credential") from None
        return AccessToken(
            partner_id=partner_id,
            credential_id=credential_id,
            scopes=frozenset(scope_to_list(decoded.claims.get("scope") or "") or ()),
            expires_at=int(decoded.claims["exp"]),
        )


def now() -> int:
    return int(time.time())
