"""Secrets at rest and one-way forms of what must never be stored in clear.

Signing keys and TOTP seeds are sealed with AES-256-GCM under the key from
IDENTITY_SECRETS_KEY; the row's purpose is bound in as associated data, so a
sealed value copied into another column does not open. Codes, reset links and
refresh tokens are stored only as keyed hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE_BYTES = 12


def _derive(key: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(key)


class SecretBox:
    """Seals small secrets; the first byte names the format so keys can rotate later."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes")
        self._aead = AESGCM(_derive(key, b"mamoru-identity seal v1"))
        self._code_key = _derive(key, b"mamoru-identity codes v1")

    def seal(self, plaintext: bytes, *, purpose: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, purpose.encode())

    def open(self, sealed: bytes, *, purpose: str) -> bytes:
        if sealed[:1] != _VERSION:
            raise ValueError("unknown sealed format")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], purpose.encode())

    def code_hash(self, code: str, *, purpose: str) -> bytes:
        """Keyed hash of a short code: a leaked table cannot be brute-forced offline."""
        return hmac.new(self._code_key, f"{purpose}\0{code}".encode(), hashlib.sha256).digest()


class Pseudonyms:
    """Stable keyed identifiers that do not reveal what they stand for."""

    def __init__(self, key: bytes) -> None:
        self._payer_key = _derive(key, b"mamoru-identity payer-id v1")
        self._identifier_key = _derive(key, b"mamoru-identity identifier v1")

    def payer_id(self, account_id: uuid.UUID) -> uuid.UUID:
        """The wallet's pairwise ID for an account (UUID form, version 8)."""
        digest = hmac.new(self._payer_key, account_id.bytes, hashlib.sha256).digest()
        raw = bytearray(digest[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80
        raw[8] = (raw[8] & 0x3F) | 0x80
        return uuid.UUID(bytes=bytes(raw))

    def identifier_hash(self, identifier_key: str) -> str:
        """What risk sees of a login identifier: enough to count attempts, not to read it."""
        return hmac.new(self._identifier_key, identifier_key.encode(), hashlib.sha256).hexdigest()


def new_link_token() -> str:
    """An unguessable token for links and refresh tokens (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """Tokens carry 256 bits of randomness, so a plain hash is enough to store them."""
    return hashlib.sha256(token.encode()).digest()


def new_code() -> str:
    """A 6-digit one-time code."""
    return f"{secrets.randbelow(1_000_000):06d}"


def new_recovery_code() -> str:
    """A recovery code: 10 characters from an alphabet without look-alikes, grouped 5-5."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def normalise_recovery_code(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")
