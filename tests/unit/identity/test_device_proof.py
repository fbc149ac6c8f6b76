"""A device's proof of its key: what verifies, and every way a proof proves nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from mamoru.identity.v1 import identity_pb2 as pb

from services.runtime.device_proof import (
    BEARER,
    BOUND_TO,
    PROOF_TYPE,
    DeviceKey,
    binding,
    bound_value,
    thumbprint,
    verify_proof,
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(
    key: ec.EllipticCurvePrivateKey,
    *,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    algorithm: str = "ES256",
    signing_key: Any = None,
) -> str:
    """A proof built by hand, so each test can break exactly one thing."""
    numbers = key.public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }
    body = {"rpc": "Login", "bnd": binding("hanako@example.jp"), "jti": "j-1", "iat": time.time()}
    body.update(claims or {})
    headers = {"typ": PROOF_TYPE, "jwk": jwk}
    headers.update(header or {})
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None},
        signing_key if signing_key is not None else key,
        algorithm=algorithm,
        headers={k: v for k, v in headers.items() if v is not None},
    )


def test_a_fresh_proof_names_the_devices_key_thumbprint() -> None:
    device = DeviceKey()

    proven = verify_proof(
        device.proof("Login", "hanako@example.jp"), rpc="Login", bound="hanako@example.jp"
    )

    assert proven is not None
    assert proven.thumbprint == device.thumbprint
    assert proven.public_jwk["kty"] == "EC" and "d" not in proven.public_jwk
    assert proven.remember_until >= time.time() + 60


def test_the_thumbprint_is_rfc_7638s_over_the_required_members_in_order() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    x = b64url(numbers.x.to_bytes(32, "big"))
    y = b64url(numbers.y.to_bytes(32, "big"))
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'

    assert thumbprint(key.public_key()) == b64url(hashlib.sha256(canonical.encode()).digest())


def test_two_devices_have_different_thumbprints_and_a_key_keeps_its_own() -> None:
    first, second = DeviceKey(), DeviceKey()
    again = DeviceKey.from_private_pem(first.private_pem())

    assert first.thumbprint != second.thumbprint
    assert again.thumbprint == first.thumbprint


@pytest.mark.parametrize(
    ("rpc", "bound"),
    [("VerifySecondFactor", "hanako@example.jp"), ("Login", "taro@example.jp")],
)
def test_a_proof_for_another_call_proves_nothing(rpc: str, bound: str) -> None:
    proof = DeviceKey().proof("Login", "hanako@example.jp")

    assert verify_proof(proof, rpc=rpc, bound=bound) is None


@pytest.mark.parametrize("age", [61, 3600, -11])
def test_a_proof_made_outside_the_window_proves_nothing(age: int) -> None:
    proof = DeviceKey().proof("Login", "hanako@example.jp", issued_at=time.time() - age)

    assert verify_proof(proof, rpc="Login", bound="hanako@example.jp") is None


def test_a_proof_signed_by_another_key_than_its_header_names_proves_nothing() -> None:
    named, signer = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    assert (
        verify_proof(forged(named, signing_key=signer), rpc="Login", bound="hanako@example.jp")
        is None
    )
    assert verify_proof(forged(named), rpc="Login", bound="hanako@example.jp") is not None


@pytest.mark.parametrize(
    "header",
    [
        {"typ": "JWT"},
        {"typ": "dpop+jwt"},
        {"jwk": None},
        {"jwk": {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}},
        {"jwk": {"kty": "oct", "k": "c2VjcmV0"}},
    ],
)
def test_a_proof_with_a_header_other_than_a_p256_device_proofs_proves_nothing(
    header: dict[str, Any],
) -> None:
    proof = forged(ec.generate_private_key(ec.SECP256R1()), header=header)

    assert verify_proof(proof, rpc="Login", bound="hanako@example.jp") is None


def test_a_proof_whose_header_carries_the_private_key_proves_nothing() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))

    assert (
        verify_proof(forged(key, header={"jwk": private}), rpc="Login", bound="hanako@example.jp")
        is None
    )


def test_a_symmetric_or_unsigned_proof_proves_nothing() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    hmac = forged(key, algorithm="HS256", signing_key=b"k" * 32)
    unsigned = forged(key, algorithm="none", signing_key="")

    for proof in (hmac, unsigned):
        assert verify_proof(proof, rpc="Login", bound="hanako@example.jp") is None


@pytest.mark.parametrize(
    "claims",
    [{"jti": None}, {"jti": ""}, {"jti": 7}, {"jti": "x" * 129}, {"iat": None}, {"iat": "now"}],
)
def test_a_proof_without_a_usable_jti_or_iat_proves_nothing(claims: dict[str, Any]) -> None:
    proof = forged(ec.generate_private_key(ec.SECP256R1()), claims=claims)

    assert verify_proof(proof, rpc="Login", bound="hanako@example.jp") is None


@pytest.mark.parametrize("proof", ["", "not a token", "a.b.c", "x" * 5000])
def test_garbage_proves_nothing(proof: str) -> None:
    assert verify_proof(proof, rpc="Login", bound="hanako@example.jp") is None


def test_every_rpc_taking_a_proof_says_what_it_binds_and_nothing_else_does() -> None:
    service = pb.DESCRIPTOR.services_by_name["IdentityService"]
    taking = {
        name: method.input_type
        for name, method in service.methods_by_name.items()
        if "device_proof" in method.input_type.fields_by_name
    }
    assert set(BOUND_TO) == set(taking)
    for rpc, bound_to in BOUND_TO.items():
        assert bound_to == BEARER or bound_to in taking[rpc].fields_by_name, rpc


def test_a_proof_for_a_request_binds_its_field_or_the_bearer_token() -> None:
    key = DeviceKey()
    login = pb.LoginRequest(identifier="hanako@example.jp")
    assert verify_proof(key.prove("Login", login), rpc="Login", bound="hanako@example.jp")
    verify = pb.VerifySecondFactorRequest(challenge_id="c-1")
    assert bound_value("VerifySecondFactor", verify) == "c-1"
    assert bound_value("BeginPasskeyLogin", pb.BeginPasskeyLoginRequest()) == ""
    exchange = pb.ExchangeTokenRequest(audience="wallet")
    proof = key.prove("ExchangeToken", exchange, bearer_token="token-1")
    assert verify_proof(proof, rpc="ExchangeToken", bound="token-1")
    assert not verify_proof(proof, rpc="ExchangeToken", bound="wallet")


def test_the_registration_devices_privileges_are_proven_against_the_bearer_token() -> None:
    # A copied token alone must not carry them: the proof binds the very token shown.
    for rpc in ("AddContact", "FinishPasskeyRegistration", "ConfirmTotpEnrollment"):
        assert BOUND_TO[rpc] == BEARER, rpc
    add = pb.AddContactRequest(address="hanako.new@example.jp", make_primary=True)
    assert bound_value("AddContact", add, bearer_token="token-1") == "token-1"
