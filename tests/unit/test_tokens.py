"""Access-token signing and local verification, with identity's JWKS as an in-memory key ring."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.utils import base64url_encode

from services.runtime.tokens import (
    REQUIRED_CLAIMS,
    JwksCache,
    RevocationList,
    SigningKey,
    SigningKeysUnavailable,
    TokenRejected,
    TokenVerifier,
    generate_signing_key,
    jwks_document,
    sign_token,
)

ISSUER = "https://identity.mamoru.test"
SHARED_SECRET = b"a-symmetric-secret-of-thirty-two-bytes"


class KeyRing:
    """Stands in for identity's GetJwks: the published keys and how often they were fetched."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.extra_entries: list[dict[str, Any]] = []
        self.fetches = 0
        self.failing = False

    async def fetch(self) -> dict[str, Any]:
        self.fetches += 1
        await asyncio.sleep(0)
        if self.failing:
            raise ConnectionError("identity unreachable")
        document = jwks_document(self.keys)
        document["keys"].extend(self.extra_entries)
        return document


def valid_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "0190b5d2-6a1f-7c3e-9a51-1d2e3f405162",
        "aud": "wallet",
        "exp": now + 300,
        "iat": now,
        "auth_time": now - 60,
        "jti": "tok-1",
        "sid": "session-1",
        "cnf": {"jkt": "device-key-thumbprint"},
        "acr": 2,
        "amr": ["pwd", "otp"],
        "scope_hint": "payments",
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    parts = [
        base64url_encode(json.dumps(header).encode()),
        base64url_encode(json.dumps(claims).encode()),
        base64url_encode(signature),
    ]
    return b".".join(parts).decode()


@pytest.fixture
def key() -> SigningKey:
    return generate_signing_key()


@pytest.fixture
def ring(key: SigningKey) -> KeyRing:
    return KeyRing(key)


@pytest.fixture
def revocations() -> RevocationList:
    return RevocationList()


@pytest.fixture
def verifier(ring: KeyRing, revocations: RevocationList) -> TokenVerifier:
    return TokenVerifier(JwksCache(ring.fetch), issuer=ISSUER, revocations=revocations)


async def rejection_reason(
    verifier: TokenVerifier, token: str, audiences: tuple[str, ...] = ("wallet",)
) -> str:
    with pytest.raises(TokenRejected) as rejected:
        await verifier.verify(token, audiences)
    return rejected.value.reason


async def test_valid_token_yields_its_claims(verifier: TokenVerifier, key: SigningKey) -> None:
    claims = valid_claims()

    verified = await verifier.verify(sign_token(key, claims), {"wallet"})

    assert verified.subject == claims["sub"]
    assert verified.audience == "wallet"
    assert verified.issuer == ISSUER
    assert verified.session_id == "session-1"
    assert verified.device_key == "device-key-thumbprint"
    assert verified.methods == ("pwd", "otp")
    assert verified.assurance_level == 2
    assert verified.auth_time == datetime.fromtimestamp(claims["auth_time"], UTC)
    assert verified.issued_at == datetime.fromtimestamp(claims["iat"], UTC)
    assert verified.expires_at == datetime.fromtimestamp(claims["exp"], UTC)
    assert verified.token_id == "tok-1"
    assert verified.raw["scope_hint"] == "payments"


async def test_token_without_a_device_key_has_no_device_key(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    verified = await verifier.verify(sign_token(key, valid_claims(cnf=None)), {"wallet"})

    assert verified.device_key is None


async def test_a_device_id_claim_is_no_device_key(verifier: TokenVerifier, key: SigningKey) -> None:
    # A reusable device id (the old `did`) names no key anyone has to prove.
    token = sign_token(key, valid_claims(cnf=None, did="device-1"))

    verified = await verifier.verify(token, {"wallet"})

    assert verified.device_key is None


async def test_assurance_level_sent_as_text_is_read_as_a_number(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    verified = await verifier.verify(sign_token(key, valid_claims(acr="1")), {"wallet"})

    assert verified.assurance_level == 1


async def test_token_header_names_es256_and_the_signing_kid(key: SigningKey) -> None:
    header = jwt.get_unverified_header(sign_token(key, valid_claims()))

    assert header["alg"] == "ES256"
    assert header["kid"] == key.kid


async def test_token_with_alg_none_is_refused(verifier: TokenVerifier, key: SigningKey) -> None:
    token = unsigned_token({"alg": "none", "kid": key.kid, "typ": "JWT"}, valid_claims())

    assert await rejection_reason(verifier, token) == "algorithm not accepted"


async def test_token_signed_with_hmac_over_the_public_key_is_refused(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unsigned = unsigned_token({"alg": "HS256", "kid": key.kid, "typ": "JWT"}, valid_claims())
    signing_input = unsigned.rsplit(".", 1)[0]
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64url_encode(mac).decode()}"

    assert await rejection_reason(verifier, token) == "algorithm not accepted"


async def test_token_without_a_kid_is_refused(verifier: TokenVerifier, key: SigningKey) -> None:
    token = jwt.encode(valid_claims(), key.private_key, algorithm="ES256")

    assert await rejection_reason(verifier, token) == "token has no key id"


async def test_token_with_an_unknown_kid_is_refused(verifier: TokenVerifier) -> None:
    stranger = generate_signing_key()

    assert await rejection_reason(verifier, sign_token(stranger, valid_claims())) == (
        "unknown signing key"
    )


async def test_token_signed_by_another_key_under_a_known_kid_is_refused(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    forger = SigningKey(kid=key.kid, private_key=ec.generate_private_key(ec.SECP256R1()))

    assert await rejection_reason(verifier, sign_token(forger, valid_claims())) == "bad signature"


async def test_token_with_an_edited_payload_is_refused(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    header, _, signature = sign_token(key, valid_claims()).split(".")
    edited = base64url_encode(json.dumps(valid_claims(sub="someone-else")).encode()).decode()

    assert await rejection_reason(verifier, f"{header}.{edited}.{signature}") == "bad signature"


@pytest.mark.parametrize("token", ["", "not-a-token", "a.b.c", "....."])
async def test_malformed_token_is_refused(verifier: TokenVerifier, token: str) -> None:
    assert await rejection_reason(verifier, token) == "malformed token"


async def test_expired_token_is_refused(verifier: TokenVerifier, key: SigningKey) -> None:
    now = int(time.time())
    claims = valid_claims(iat=now - 600, auth_time=now - 600, exp=now - 60)

    assert await rejection_reason(verifier, sign_token(key, claims)) == "token expired"


async def test_token_expired_within_the_leeway_is_still_accepted(
    ring: KeyRing, key: SigningKey
) -> None:
    lenient = TokenVerifier(JwksCache(ring.fetch), issuer=ISSUER, leeway_seconds=600)
    now = int(time.time())
    claims = valid_claims(iat=now - 900, auth_time=now - 900, exp=now - 60)

    verified = await lenient.verify(sign_token(key, claims), {"wallet"})

    assert verified.token_id == "tok-1"


async def test_a_token_accepted_before_is_refused_once_it_expires(
    ring: KeyRing, key: SigningKey
) -> None:
    strict = TokenVerifier(JwksCache(ring.fetch), issuer=ISSUER, leeway_seconds=0)
    expires = int(time.time()) + 3
    token = sign_token(key, valid_claims(exp=expires))
    await strict.verify(token, {"wallet"})

    # Sleeps past the expiry itself (a clock time), whatever the machine's speed.
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.05)

    assert await rejection_reason(strict, token) == "token expired"


async def test_a_token_accepted_before_is_refused_once_identity_stops_publishing_its_key(
    ring: KeyRing, key: SigningKey
) -> None:
    keys = JwksCache(ring.fetch)
    verifier = TokenVerifier(keys, issuer=ISSUER)
    token = sign_token(key, valid_claims())
    await verifier.verify(token, {"wallet"})

    ring.keys = [generate_signing_key()]
    await keys.refresh()

    assert await rejection_reason(verifier, token) == "unknown signing key"


async def test_a_token_accepted_for_one_service_is_still_refused_by_another(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    token = sign_token(key, valid_claims(aud="wallet"))
    await verifier.verify(token, {"wallet"})

    assert await rejection_reason(verifier, token, ("notify",)) == "wrong audience"


async def test_token_issued_in_the_future_is_refused(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    later = int(time.time()) + 3600
    claims = valid_claims(iat=later, auth_time=later, exp=later + 300)

    assert await rejection_reason(verifier, sign_token(key, claims)) == "token not yet valid"


async def test_token_claiming_authentication_after_its_issue_is_refused(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    now = int(time.time())
    claims = valid_claims(iat=now - 10, auth_time=now)

    assert await rejection_reason(verifier, sign_token(key, claims)) == (
        "authentication after issue"
    )


async def test_token_from_another_issuer_is_refused(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    token = sign_token(key, valid_claims(iss="https://evil.example"))

    assert await rejection_reason(verifier, token) == "wrong issuer"


async def test_token_for_another_audience_is_refused(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    token = sign_token(key, valid_claims(aud="identity"))

    assert await rejection_reason(verifier, token, ("wallet",)) == "wrong audience"


async def test_token_naming_several_audiences_is_refused(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    token = sign_token(key, valid_claims(aud=["wallet", "risk"]))

    assert await rejection_reason(verifier, token, ("wallet",)) == (
        "token must name exactly one audience"
    )


async def test_token_naming_its_one_audience_in_a_list_is_accepted(
    verifier: TokenVerifier, key: SigningKey
) -> None:
    verified = await verifier.verify(sign_token(key, valid_claims(aud=["wallet"])), {"wallet"})

    assert verified.audience == "wallet"


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
async def test_token_missing_a_required_claim_is_refused(
    verifier: TokenVerifier, key: SigningKey, claim: str
) -> None:
    token = sign_token(key, valid_claims(**{claim: None}))

    assert await rejection_reason(verifier, token) == f"missing claim {claim}"


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("sid", 7),
        ("sub", ""),
        ("amr", "pwd"),
        ("acr", "high"),
        ("acr", True),
        ("cnf", "thumbprint"),
        ("cnf", {"jkt": ""}),
        ("cnf", {"jwk": {"kty": "EC"}}),
    ],
)
async def test_token_with_a_malformed_claim_is_refused(
    verifier: TokenVerifier, key: SigningKey, claim: str, value: Any
) -> None:
    token = sign_token(key, valid_claims(**{claim: value}))

    assert await rejection_reason(verifier, token) == f"malformed claim {claim}"


async def test_verify_needs_at_least_one_audience(verifier: TokenVerifier, key: SigningKey) -> None:
    with pytest.raises(ValueError, match="audience"):
        await verifier.verify(sign_token(key, valid_claims()), ())


async def test_token_of_a_revoked_session_is_refused(
    verifier: TokenVerifier, key: SigningKey, revocations: RevocationList
) -> None:
    token = sign_token(key, valid_claims(sid="session-9"))
    await verifier.verify(token, {"wallet"})

    revocations.revoke("session-9", datetime.now(UTC) + timedelta(minutes=10))

    assert await rejection_reason(verifier, token) == "session revoked"


async def test_revoking_one_session_leaves_other_sessions_valid(
    verifier: TokenVerifier, key: SigningKey, revocations: RevocationList
) -> None:
    revocations.revoke("session-9", datetime.now(UTC) + timedelta(minutes=10))

    verified = await verifier.verify(sign_token(key, valid_claims(sid="session-1")), {"wallet"})

    assert verified.session_id == "session-1"


def test_revocation_is_forgotten_once_its_tokens_have_expired() -> None:
    revocations = RevocationList()
    revocations.revoke("old-session", datetime.now(UTC) - timedelta(seconds=1))
    revocations.revoke("live-session", datetime.now(UTC) + timedelta(minutes=10))

    assert not revocations.is_revoked("old-session")
    assert revocations.is_revoked("live-session")
    assert len(revocations) == 1


def test_revoking_a_session_again_keeps_the_later_end() -> None:
    revocations = RevocationList()
    revocations.revoke("session-1", datetime.now(UTC) + timedelta(minutes=10))
    revocations.revoke("session-1", datetime.now(UTC) - timedelta(seconds=1))

    assert revocations.is_revoked("session-1")


def test_revocation_end_without_a_timezone_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        RevocationList().revoke("session-1", datetime.now() + timedelta(minutes=1))


async def test_a_flood_of_unknown_kids_refetches_once_within_the_minimum_interval(
    ring: KeyRing, verifier: TokenVerifier, key: SigningKey
) -> None:
    await verifier.verify(sign_token(key, valid_claims()), {"wallet"})
    assert ring.fetches == 1

    for _ in range(50):
        await rejection_reason(verifier, sign_token(generate_signing_key(), valid_claims()))

    assert ring.fetches == 2


async def test_concurrent_unknown_kids_share_one_refetch(
    ring: KeyRing, verifier: TokenVerifier, key: SigningKey
) -> None:
    await verifier.verify(sign_token(key, valid_claims()), {"wallet"})
    bogus = [sign_token(generate_signing_key(), valid_claims()) for _ in range(20)]

    results = await asyncio.gather(
        *(verifier.verify(token, {"wallet"}) for token in bogus), return_exceptions=True
    )

    assert all(isinstance(result, TokenRejected) for result in results)
    assert ring.fetches == 2


async def test_unknown_kid_refetches_again_after_the_minimum_interval(ring: KeyRing) -> None:
    cache = JwksCache(ring.fetch, min_refresh_seconds=0.2)
    await cache.refresh()
    assert await cache.key_for("missing") is None
    assert await cache.key_for("missing") is None
    assert ring.fetches == 2

    await asyncio.sleep(0.3)

    assert await cache.key_for("missing") is None
    assert ring.fetches == 3


async def test_key_rotated_in_soon_after_start_up_is_found_by_refetching(
    ring: KeyRing, key: SigningKey
) -> None:
    verifier = TokenVerifier(JwksCache(ring.fetch), issuer=ISSUER)
    await verifier.verify(sign_token(key, valid_claims()), {"wallet"})
    rotated = generate_signing_key()
    ring.keys.append(rotated)

    verified = await verifier.verify(sign_token(rotated, valid_claims(jti="tok-2")), {"wallet"})

    assert verified.token_id == "tok-2"
    assert ring.fetches == 2


async def test_key_retired_at_identity_stops_verifying_after_a_refetch(
    ring: KeyRing, key: SigningKey
) -> None:
    verifier = TokenVerifier(JwksCache(ring.fetch, min_refresh_seconds=0), issuer=ISSUER)
    old_token = sign_token(key, valid_claims())
    await verifier.verify(old_token, {"wallet"})
    rotated = generate_signing_key()
    ring.keys = [rotated]
    await verifier.verify(sign_token(rotated, valid_claims()), {"wallet"})

    assert await rejection_reason(verifier, old_token) == "unknown signing key"


async def test_keys_other_than_p256_signature_keys_are_ignored(ring: KeyRing) -> None:
    rsa_public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    p384_public = ec.generate_private_key(ec.SECP384R1()).public_key()
    ring.extra_entries = [
        {"kty": "oct", "k": base64url_encode(SHARED_SECRET).decode(), "kid": "symmetric"},
        {**jwt.algorithms.RSAAlgorithm.to_jwk(rsa_public, as_dict=True), "kid": "rsa"},
        {**jwt.algorithms.ECAlgorithm.to_jwk(p384_public, as_dict=True), "kid": "p384"},
        {**generate_signing_key().public_jwk(), "kid": "encryption", "use": "enc"},
        {**generate_signing_key().public_jwk(), "kid": "confused", "alg": "HS256"},
    ]
    cache = JwksCache(ring.fetch)
    await cache.refresh()

    for kid in ("symmetric", "rsa", "p384", "encryption", "confused"):
        assert await cache.key_for(kid) is None, kid


async def test_hmac_token_under_a_symmetric_jwks_entry_is_refused(ring: KeyRing) -> None:
    ring.extra_entries = [
        {"kty": "oct", "k": base64url_encode(SHARED_SECRET).decode(), "kid": "symmetric"}
    ]
    verifier = TokenVerifier(JwksCache(ring.fetch), issuer=ISSUER)
    token = jwt.encode(
        valid_claims(), SHARED_SECRET, algorithm="HS256", headers={"kid": "symmetric"}
    )

    assert await rejection_reason(verifier, token) == "algorithm not accepted"


async def test_unreachable_identity_makes_keys_unavailable_and_counts_toward_the_limit(
    ring: KeyRing,
) -> None:
    ring.failing = True
    cache = JwksCache(ring.fetch)

    with pytest.raises(SigningKeysUnavailable):
        await cache.key_for("any")
    assert await cache.key_for("any") is None
    assert ring.fetches == 1

    ring.failing = False
    await cache.refresh()
    assert await cache.key_for(ring.keys[0].kid) is not None


async def test_malformed_jwks_makes_keys_unavailable() -> None:
    async def fetch() -> dict[str, Any]:
        return {"keys": "not-a-list"}

    with pytest.raises(SigningKeysUnavailable):
        await JwksCache(fetch).refresh()


def test_signing_key_survives_a_round_trip_through_pem(key: SigningKey) -> None:
    restored = SigningKey.from_private_pem(key.kid, key.private_pem())

    assert restored.public_jwk() == key.public_jwk()


def test_signing_key_from_another_curve_is_refused() -> None:
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    with pytest.raises(ValueError, match="P-256"):
        SigningKey.from_private_pem("kid", pem)


def test_signing_key_repr_hides_the_private_key(key: SigningKey) -> None:
    private_number = str(key.private_key.private_numbers().private_value)

    assert private_number not in repr(key)
    assert "private_key" not in repr(key)
    assert "d" not in key.public_jwk()
