"""Secrets the gateway must read back (merchant keys, webhook secrets), sealed at rest.

AES-256-GCM under a key derived from GATEWAY_SECRETS_KEY; the purpose is bound
in as associated data, so a sealed value copied into another column does not open.
The access-token signing key is derived from the same secret under another label.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE_BYTES = 12


def derive(key: bytes, label: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(key)


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes")
        self._aead = AESGCM(derive(key, "mamoru-gateway seal v1"))

    def seal(self, plaintext: str, *, purpose: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), purpose.encode())

    def open(self, sealed: bytes, *, purpose: str) -> str:
        if sealed[:1] != _VERSION:
            raise ValueError("unknown sealed format")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], purpose.encode()).decode()
