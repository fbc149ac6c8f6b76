"""End-user access tokens: identity signs them (ES256), every service verifies them locally.

Verification needs no call to identity on the hot path: public keys come from
identity's JWKS (cached by ``kid``) and revoked sessions from its revocation stream.
Identity should publish a new key in its JWKS before signing with it, so a
rotation never waits on the refetch limit.
"""

from __future__ import annotations

import asyncio
import heapq
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from services.runtime.logging import get_logger

ALGORITHM = "ES256"
# Claims every Mamoru access token carries. `cnf` is optional: it names the key
# (RFC 7638 thumbprint, RFC 7800 confirmation) of the device the session proved,
# and is absent from sessions that proved none.
REQUIRED_CLAIMS = ("sub", "aud", "iss", "exp", "iat", "jti", "sid", "auth_time", "acr", "amr")

_log = get_logger(__name__)


class TokenRejected(Exception):
    """The token cannot be accepted; ``reason`` is short and safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SigningKeysUnavailable(Exception):
    """Identity's key set could not be fetched, so a token with a new ``kid`` cannot be checked."""


@dataclass(frozen=True)
class SigningKey:
    """One of identity's token signing keys; the private key never shows in repr."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK, as published in identity's JWKS."""
        jwk = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}

    def private_pem(self) -> bytes:
        """PKCS#8 PEM of the private key, for identity to encrypt and store."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_private_pem(cls, kid: str, pem: bytes) -> SigningKey:
        """Rebuild a stored key; refuses anything but a P-256 key."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("a token signing key must be an EC P-256 private key")
        return cls(kid=kid, private_key=key)


def generate_signing_key() -> SigningKey:
    """A fresh P-256 key with a random ``kid``."""
    return SigningKey(
        kid=secrets.token_urlsafe(12), private_key=ec.generate_private_key(ec.SECP256R1())
    )


def jwks_document(keys: Iterable[SigningKey]) -> dict[str, Any]:
    """The JWKS identity serves: the public halves of ``keys``."""
    return {"keys": [key.public_jwk() for key in keys]}


def sign_token(key: SigningKey, claims: Mapping[str, Any]) -> str:
    """Sign ``claims`` as a compact JWS with ES256 and the key's ``kid`` in the header."""
    return jwt.encode(dict(claims), key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


class JwksCache:
    """Identity's public keys by ``kid``, refetched when an unknown ``kid`` shows up.

    After the first successful load, refetches (and any failed attempt) happen at
    most once per ``min_refresh_seconds``, and concurrent misses share one fetch,
    so a flood of tokens with made-up ``kid`` values cannot hammer identity.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Mapping[str, Any]]],
        *,
        min_refresh_seconds: float = 30,
    ) -> None:
        self._fetch = fetch
        self._min_refresh_seconds = min_refresh_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded = False
        self._last_limited_fetch: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> jwt.PyJWK | None:
        """The key for ``kid``, refetching if allowed; None when identity has no such key."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            if key is not None or not self._may_fetch():
                return key
            await self._load(limited=True)
        return self._keys.get(kid)

    async def refresh(self) -> None:
        """Fetch the key set now, outside the limit (start-up, or a rotation announcement)."""
        async with self._lock:
            await self._load(limited=False)

    def _may_fetch(self) -> bool:
        if self._last_limited_fetch is None:
            return True
        return time.monotonic() - self._last_limited_fetch >= self._min_refresh_seconds

    async def _load(self, *, limited: bool) -> None:
        # The first successful load leaves the allowance untouched, so a key rotated in
        # shortly after start-up is still found at once.
        if limited and self._loaded:
            self._last_limited_fetch = time.monotonic()
        try:
            try:
                document = await self._fetch()
            except Exception as error:
                raise SigningKeysUnavailable("signing keys could not be fetched") from error
            keys = _usable_keys(document)
        except SigningKeysUnavailable:
            if limited:
                self._last_limited_fetch = time.monotonic()
            raise
        self._keys = keys
        self._loaded = True


def _usable_keys(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        raise SigningKeysUnavailable("identity's JWKS has no key list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        # Only P-256 signature keys: a symmetric or RSA key slipped into the set must
        # never become a way to verify tokens with another algorithm.
        if (
            not isinstance(entry, dict)
            or entry.get("kty") != "EC"
            or entry.get("crv") != "P-256"
            or entry.get("alg", ALGORITHM) != ALGORITHM
            or entry.get("use", "sig") != "sig"
            or not isinstance(entry.get("kid"), str)
            or not entry["kid"]
        ):
            _log.warning("jwks key ignored", kid=_safe_kid(entry))
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except jwt.PyJWTError:
            _log.warning("jwks key ignored", kid=_safe_kid(entry))
    return keys


def _safe_kid(entry: object) -> str | None:
    kid = entry.get("kid") if isinstance(entry, dict) else None
    return kid[:64] if isinstance(kid, str) else None


class RevocationList:
    """Sessions revoked by identity, each remembered until its last token has expired."""

    def __init__(self) -> None:
        self._until: dict[str, datetime] = {}
        self._expiries: list[tuple[datetime, str]] = []

    def revoke(self, session_id: str, until: datetime) -> None:
        """Refuse tokens of ``session_id`` until ``until`` (timezone-aware)."""
        if until.tzinfo is None:
            raise ValueError("revocation end must be timezone-aware")
        self._prune()
        current = self._until.get(session_id)
        if current is None or until > current:
            self._until[session_id] = until
            heapq.heappush(self._expiries, (until, session_id))

    def is_revoked(self, session_id: str) -> bool:
        self._prune()
        return session_id in self._until

    def __len__(self) -> int:
        self._prune()
        return len(self._until)

    def _prune(self) -> None:
        now = datetime.now(UTC)
        while self._expiries and self._expiries[0][0] <= now:
            until, session_id = heapq.heappop(self._expiries)
            # A later revoke of the same session leaves an older heap entry behind.
            if self._until.get(session_id) == until:
                del self._until[session_id]


@dataclass(frozen=True)
class TokenClaims:
    """A verified access token; ``raw`` holds every claim for service-specific checks."""

    subject: str
    audience: str
    issuer: str
    session_id: str
    # Thumbprint of the device key the session proved (``cnf.jkt``); None without one.
    device_key: str | None
    methods: tuple[str, ...]
    assurance_level: int
    auth_time: datetime
    issued_at: datetime
    expires_at: datetime
    token_id: str
    raw: Mapping[str, Any] = field(repr=False)


# Tokens a verifier remembers having verified; the oldest is forgotten first. Tokens
# live ten minutes at most, so this holds every token in use on a busy replica.
VERIFIED_TOKENS_KEPT = 10_000


@dataclass(frozen=True)
class _Verified:
    kid: str
    key: jwt.PyJWK
    claims: TokenClaims
    # Epoch seconds from which the token is expired (its ``exp`` and the leeway).
    valid_until: float


class TokenVerifier:
    """Checks identity-issued access tokens without calling identity per request."""

    def __init__(
        self,
        jwks: JwksCache,
        *,
        issuer: str,
        revocations: RevocationList | None = None,
        leeway_seconds: int = 5,
    ) -> None:
        self._jwks = jwks
        self._issuer = issuer
        self._revocations = revocations
        self._leeway_seconds = leeway_seconds
        # Oldest first (a dict keeps insertion order), so the oldest goes when full.
        self._verified: dict[tuple[str, frozenset[str]], _Verified] = {}

    async def verify(self, token: str, audiences: Collection[str]) -> TokenClaims:
        """The token's claims if it is valid for one of ``audiences``; else TokenRejected.

        A token verified before for the same audiences is not checked again while it
        has not expired and its signing key is still identity's: a payer's token
        comes with each of their calls for minutes, and the signature and claims
        (about 0.1 ms) were most of what verifying it cost. The session's
        revocation is checked on every call all the same.
        """
        if not audiences:
            raise ValueError("at least one accepted audience is required")
        remembered = (token, frozenset(audiences))
        kept = self._verified.get(remembered)
        if kept is not None and await self._still_valid(kept):
            claims = kept.claims
        else:
            self._verified.pop(remembered, None)
            kid, key, claims = await self._verify_signed(token, audiences)
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                del self._verified[next(iter(self._verified))]
            expiry = claims.expires_at.timestamp() + self._leeway_seconds
            self._verified[remembered] = _Verified(kid, key, claims, expiry)
        if self._revocations is not None and self._revocations.is_revoked(claims.session_id):
            raise TokenRejected("session revoked")
        return claims

    async def _still_valid(self, kept: _Verified) -> bool:
        # As PyJWT's own check: expired once the expiry and the leeway have passed.
        if time.time() >= kept.valid_until:
            return False
        return await self._jwks.key_for(kept.kid) is kept.key

    async def _verify_signed(
        self, token: str, audiences: Collection[str]
    ) -> tuple[str, jwt.PyJWK, TokenClaims]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        # Checked before any key lookup: `none` and HS* must never reach a verifier.
        if header.get("alg") != ALGORITHM:
            raise TokenRejected("algorithm not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("token has no key id")
        key = await self._jwks.key_for(kid)
        if key is None:
            raise TokenRejected("unknown signing key")
        payload = self._decode(token, key, audiences)
        return kid, key, _claims_from(payload, audiences)

    def _decode(self, token: str, key: jwt.PyJWK, audiences: Collection[str]) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                audience=list(audiences),
                issuer=self._issuer,
                leeway=self._leeway_seconds,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("wrong issuer") from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenRejected(f"missing claim {error.claim}") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad signature") from None
        except jwt.PyJWTError:
            raise TokenRejected("invalid token") from None


def _claims_from(payload: dict[str, Any], audiences: Collection[str]) -> TokenClaims:
    audience = payload["aud"]
    if isinstance(audience, list):
        # A token good at several services could be replayed by one of them at another.
        if len(audience) != 1:
            raise TokenRejected("token must name exactly one audience")
        audience = audience[0]
    if audience not in audiences:
        raise TokenRejected("wrong audience")
    device_key = _confirmation_key(payload)
    methods = payload["amr"]
    if not isinstance(methods, list) or not all(_is_text(method) for method in methods):
        raise TokenRejected("malformed claim amr")
    auth_time = _timestamp(payload, "auth_time")
    issued_at = _timestamp(payload, "iat")
    if auth_time > issued_at:
        raise TokenRejected("authentication after issue")
    return TokenClaims(
        subject=_text(payload, "sub"),
        audience=audience,
        issuer=_text(payload, "iss"),
        session_id=_text(payload, "sid"),
        device_key=device_key,
        methods=tuple(methods),
        assurance_level=_assurance_level(payload["acr"]),
        auth_time=auth_time,
        issued_at=issued_at,
        expires_at=_timestamp(payload, "exp"),
        token_id=_text(payload, "jti"),
        raw=MappingProxyType(payload),
    )


def _confirmation_key(payload: Mapping[str, Any]) -> str | None:
    confirmation = payload.get("cnf")
    if confirmation is None:
        return None
    if not isinstance(confirmation, dict) or not _is_text(confirmation.get("jkt")):
        raise TokenRejected("malformed claim cnf")
    key: str = confirmation["jkt"]
    return key


def _is_text(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _text(payload: Mapping[str, Any], claim: str) -> str:
    value = payload[claim]
    if not isinstance(value, str) or not value:
        raise TokenRejected(f"malformed claim {claim}")
    return value


def _timestamp(payload: Mapping[str, Any], claim: str) -> datetime:
    value = payload[claim]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"malformed claim {claim}")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise TokenRejected(f"malformed claim {claim}") from None


def _assurance_level(value: object) -> int:
    # OpenID Connect carries `acr` as a string; identity may send "2" or 2.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 2:
        return int(value)
    raise TokenRejected("malformed claim acr")
