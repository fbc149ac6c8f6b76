"""Proof that a request comes from a device holding a key, modelled on DPoP (RFC 9449).

A device (an app's secure storage, or a browser's non-extractable WebCrypto key)
creates a P-256 key on first use and never lets the private half out. Identity
knows a device only by the RFC 7638 thumbprint of its public key: a device id
string that anyone could copy from a log or a token proves nothing.

Every request that claims a device carries a proof: a compact JWS signed with the
device key (ES256), the public JWK in its header, typ ``mamoru-device+jwt``, and
the claims

- ``rpc``: the RPC's name (``Login``, ``VerifySecondFactor``, ...),
- ``bnd``: base64url (no padding) of SHA-256 of what the request is about (the
  login identifier, the challenge or ceremony id, the refresh or access token),
- ``jti``: a unique id; identity refuses a second use on every replica,
- ``iat``: when it was made; proofs older than the window are refused.

A proof that fails any check is no proof: the request is a new device's, never an
error that would tell an attacker more than a wrong guess does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import Message

PROOF_TYPE = "mamoru-device+jwt"
ALGORITHM = "ES256"
# Longer than any honest proof (a P-256 JWK header and five short claims are ~500 bytes).
MAX_PROOF_LENGTH = 2048
MAX_JTI_LENGTH = 128
# A proof is made just before its request; clocks may differ a little either way.
DEFAULT_MAX_AGE_SECONDS = 60
DEFAULT_MAX_FUTURE_SECONDS = 10


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def binding(value: str) -> str:
    """The ``bnd`` claim for a request about ``value``."""
    return _b64url(hashlib.sha256(value.encode("utf-8")).digest())


# What each RPC's proof is bound to (its ``bnd``): a field of its request, as sent, or
# the bearer access token the call carries (as DPoP's ``ath``), as the contract's
# device_proof comments say and identity checks. A client that signs proofs for any
# request (the call tool, the demo) reads the rule here rather than keeping its own.
BEARER = "(the call's bearer token)"
BOUND_TO: dict[str, str] = {
    "Register": "email",
    "VerifyEmail": "email",
    "Login": "identifier",
    "VerifySecondFactor": "challenge_id",
    "BeginPasskeyLogin": "challenge_id",
    "FinishPasskeyLogin": "ceremony_id",
    "RefreshSession": "refresh_token",
    "ExchangeToken": BEARER,
    # The registration device's privileges (a new primary email without a strong
    # session, a first factor without a cool-off) need the key itself, not its token.
    "AddContact": BEARER,
    "FinishPasskeyRegistration": BEARER,
    "ConfirmTotpEnrollment": BEARER,
}


def bound_value(rpc: str, request: Message, *, bearer_token: str = "") -> str:
    """What a proof for this call of ``rpc`` binds; KeyError for an RPC that takes none."""
    bound_to = BOUND_TO[rpc]
    if bound_to == BEARER:
        return bearer_token
    return str(getattr(request, bound_to))


def _public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The canonical P-256 JWK: fixed-length coordinates, required members only."""
    numbers = key.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of a P-256 public key."""
    # RFC 7638 §3: the required members in lexicographic order, no whitespace.
    canonical = json.dumps(_public_jwk(key), separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass(frozen=True)
class ProvenDevice:
    """A proof that verified: the device's key, and how long its ``jti`` must be remembered."""

    thumbprint: str
    public_jwk: dict[str, str]
    jti: str
    remember_until: float


def verify_proof(
    proof: str,
    *,
    rpc: str,
    bound: str,
    now: float | None = None,
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
    max_future_seconds: int = DEFAULT_MAX_FUTURE_SECONDS,
) -> ProvenDevice | None:
    """The device ``proof`` was signed by, if it is a valid proof for this request.

    Replay (a ``jti`` seen before) is the caller's to check, in identity's database,
    so that every replica refuses it.
    """
    if not proof or len(proof) > MAX_PROOF_LENGTH:
        return None
    try:
        header = jwt.get_unverified_header(proof)
    except jwt.PyJWTError:
        return None
    key = _device_key(header)
    if key is None:
        return None
    try:
        claims = jwt.decode(
            proof,
            key,
            algorithms=[ALGORITHM],
            # iat is checked below against our own window, not PyJWT's.
            options={"require": ["iat", "jti"], "verify_iat": False, "verify_aud": False},
        )
    except jwt.PyJWTError:
        return None
    jti, issued_at = claims.get("jti"), claims.get("iat")
    if (
        claims.get("rpc") != rpc
        or claims.get("bnd") != binding(bound)
        or not isinstance(jti, str)
        or not 0 < len(jti) <= MAX_JTI_LENGTH
        or isinstance(issued_at, bool)
        or not isinstance(issued_at, int | float)
    ):
        return None
    now = time.time() if now is None else now
    if not now - max_age_seconds <= issued_at <= now + max_future_seconds:
        return None
    return ProvenDevice(
        thumbprint=thumbprint(key),
        public_jwk=_public_jwk(key),
        jti=jti,
        remember_until=float(issued_at) + max_age_seconds + max_future_seconds,
    )


def _device_key(header: dict[str, Any]) -> ec.EllipticCurvePublicKey | None:
    # Checked before any key is built: `none`, HS* and RSA never reach a verifier,
    # and a JWK carrying a private part is a broken client, not a device.
    if header.get("alg") != ALGORITHM or header.get("typ") != PROOF_TYPE:
        return None
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        return None
    if "d" in jwk:
        return None
    try:
        # Builds the point through cryptography, which refuses one not on the curve.
        key = jwt.PyJWK({k: jwk[k] for k in ("kty", "crv", "x", "y")}, algorithm=ALGORITHM).key
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


class DeviceKey:
    """A device's own key pair and the proofs it signs: what an app or a browser does.

    Identity never holds one; people in tests and benchmarks do.
    """

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self._key = private_key or ec.generate_private_key(ec.SECP256R1())
        self._jwk = _public_jwk(self._key.public_key())
        self.thumbprint = thumbprint(self._key.public_key())

    def proof(self, rpc: str, bound: str, *, issued_at: float | None = None) -> str:
        """A fresh proof for one call of ``rpc`` about ``bound``."""
        claims = {
            "rpc": rpc,
            "bnd": binding(bound),
            "jti": secrets.token_urlsafe(16),
            "iat": int(time.time() if issued_at is None else issued_at),
        }
        headers = {"typ": PROOF_TYPE, "jwk": self._jwk}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers=headers)

    def prove(self, rpc: str, request: Message, *, bearer_token: str = "") -> str:
        """A fresh proof for ``request`` to ``rpc``, bound as identity checks it."""
        return self.proof(rpc, bound_value(rpc, request, bearer_token=bearer_token))

    def private_pem(self) -> bytes:
        """PKCS#8 PEM, so a device can be handed to another process (a load generator)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_private_pem(cls, pem: bytes) -> DeviceKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("a device key must be an EC P-256 private key")
        return cls(key)
