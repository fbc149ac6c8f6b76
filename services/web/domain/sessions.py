"""A browser session: what the web service holds for one browser, never the browser.

Each browser is a device to identity: the session makes a P-256 device key on
the first visit and signs every device proof with it, so the person's tokens are
bound to a key that never leaves the server. The browser only holds the random
session id in an HttpOnly cookie. A session is sealed (AES-GCM) before it is
stored, and only the SHA-256 of its id is kept as the row's key.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.runtime.device_proof import DeviceKey

LANGUAGES = ("ja", "en")


def new_id() -> str:
    return secrets.token_urlsafe(32)


def id_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def _new_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass
class BrowserSession:
    """One browser's state. ``pending`` carries a ceremony between two pages
    (the email being verified, a sign-in challenge, a passkey ceremony)."""

    device_key_pem: str = field(default_factory=_new_key_pem)
    device_label: str = field(default_factory=lambda: "browser-" + secrets.token_hex(4))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    lang: str = "ja"
    access_token: str = ""
    access_expires_at: float = 0.0
    refresh_token: str = ""
    session_id: str = ""
    assurance_level: int = 0
    wallet_token: str = ""
    wallet_expires_at: float = 0.0
    pending: dict[str, Any] = field(default_factory=dict)
    # Shown once on the next page, then dropped (recovery codes, notices).
    flash: dict[str, Any] = field(default_factory=dict)
    # The page that sent the person to sign in (a mail's link), opened after it.
    return_to: str = ""

    @property
    def signed_in(self) -> bool:
        return bool(self.refresh_token)

    def device_key(self) -> DeviceKey:
        key = serialization.load_pem_private_key(self.device_key_pem.encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return DeviceKey(key)

    def proof(self, rpc: str, bound: str) -> str:
        return self.device_key().proof(rpc, bound)

    def sign_out(self) -> None:
        """Forget the person's tokens; the device key and language stay with the browser."""
        self.access_token = self.refresh_token = self.session_id = self.wallet_token = ""
        self.access_expires_at = self.wallet_expires_at = 0.0
        self.assurance_level = 0
        self.pending = {}
        self.return_to = ""
        self.csrf = secrets.token_urlsafe(32)

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> BrowserSession:
        data = json.loads(text)
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)
