"""Configuration of the identity service, read once from the environment."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from pathlib import Path
from typing import ClassVar

from services.identity.domain.admission import HashSlots
from services.runtime.config import ConfigError, Secret, ServiceSettings, env

# The longest an access token may live: a stolen one is useless within minutes.
MAX_ACCESS_TOKEN_SECONDS = 600


def decode_key(name: str, secret: Secret) -> bytes:
    """A 32-byte key given as base64 (standard or URL-safe, padding optional)."""
    text = secret.reveal().strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name} must be 32 random bytes in base64") from None
    if len(raw) != 32:
        raise ConfigError(f"{name} must be 32 random bytes in base64, got {len(raw)} bytes")
    return raw


@dataclasses.dataclass(frozen=True, kw_only=True)
class IdentitySettings(ServiceSettings):
    env_prefix: ClassVar[str] = "IDENTITY"
    default_grpc_port: ClassVar[int] = 50051
    default_health_port: ClassVar[int] = 50061
    default_metrics_port: ClassVar[int] = 9461

    secrets_key: Secret | None = env(
        "IDENTITY_SECRETS_KEY",
        default=None,
        help="32 random bytes in base64 (openssl rand -base64 32); seals signing keys and "
        "TOTP seeds at rest. Required.",
    )
    pseudonym_key: Secret | None = env(
        "IDENTITY_PSEUDONYM_KEY",
        default=None,
        help="32 random bytes in base64 keying payer IDs and identifier hashes; derived from "
        "IDENTITY_SECRETS_KEY when unset (set it before ever rotating that key)",
    )
    access_token_seconds: int = env(
        "IDENTITY_ACCESS_TOKEN_SECONDS", default=600, help="access token lifetime (at most 600)"
    )
    revocation_replay_seconds: int = env(
        "IDENTITY_REVOCATION_REPLAY_SECONDS",
        default=3600,
        help="how long WatchRevocations replays a revocation (with the access token life, "
        "whichever is longer); at least as long as anything a session makes in the wallet "
        "lives (WALLET_HOLD_SECONDS, WALLET_CASH_CODE_SECONDS)",
    )
    refresh_token_days: int = env(
        "IDENTITY_REFRESH_TOKEN_DAYS", default=30, help="how long a session may be refreshed"
    )
    cooloff_hours: float = env(
        "IDENTITY_COOLOFF_HOURS",
        default=24.0,
        help="after a credential or contact change, wallet tokens need a prior passkey this long",
    )
    key_rotation_hours: float = env(
        "IDENTITY_KEY_ROTATION_HOURS", default=720.0, help="how often the signing key rotates"
    )
    risk_timeout_seconds: float = env(
        "IDENTITY_RISK_TIMEOUT_SECONDS",
        default=0.5,
        help="how long a sign-in waits for risk before requiring a second factor",
    )
    webauthn_rp_id: str = env(
        "IDENTITY_WEBAUTHN_RP_ID", default="localhost", help="WebAuthn relying party ID (domain)"
    )
    webauthn_origins: tuple[str, ...] = env(
        "IDENTITY_WEBAUTHN_ORIGINS",
        default=("https://localhost",),
        help="comma-separated origins passkey ceremonies may come from",
    )
    oidc_providers: tuple[str, ...] = env(
        "IDENTITY_OIDC_PROVIDERS",
        default=(),
        help="external ID providers, comma-separated, each "
        "name|issuer|client_id|jwks_url|authorization_endpoint",
    )
    forced_reset_batch: int = env(
        "IDENTITY_FORCED_RESET_BATCH",
        default=5000,
        help="accounts per transaction of ForceCredentialReset (one progress message each)",
    )
    device_proof_seconds: int = env(
        "IDENTITY_DEVICE_PROOF_SECONDS",
        default=60,
        help="how old a device's proof of its key may be (its iat); spent proofs are "
        "remembered this long, and ten seconds more for clocks running ahead",
    )
    pwned_range_url: str = env(
        "IDENTITY_PWNED_RANGE_URL",
        default="",
        help="Pwned Passwords range API base (https://api.pwnedpasswords.com/range/); "
        "unset = offline list only",
    )

    hash_slots: int | None = env(
        "IDENTITY_HASH_SLOTS",
        default=None,
        help="password hashes (argon2) running at once; unset = the cores this process may use",
    )
    hash_slots_for_known_devices: int | None = env(
        "IDENTITY_HASH_SLOTS_FOR_KNOWN_DEVICES",
        default=None,
        help="of those, slots only sign-ins from a device the account knows may use (they "
        "also go first for the others); unset = 1, or 0 with a single slot",
    )
    hash_queue: int = env(
        "IDENTITY_HASH_QUEUE",
        default=64,
        help="new-device attempts that may wait for a hashing slot (from before risk is "
        "asked); beyond, or when the wait would pass IDENTITY_HASH_WAIT_SECONDS, an "
        "attempt is refused at once, without a hash, as a wrong password is",
    )
    hash_wait_seconds: float = env(
        "IDENTITY_HASH_WAIT_SECONDS",
        default=2.0,
        help="how long a new-device attempt may wait for a hashing slot",
    )
    known_device_hash_wait_seconds: float = env(
        "IDENTITY_KNOWN_DEVICE_HASH_WAIT_SECONDS",
        default=5.0,
        help="how long a known device's hash may wait for a slot (then UNAVAILABLE)",
    )
    refusal_reports_per_second: float = env(
        "IDENTITY_REFUSAL_REPORTS_PER_SECOND",
        default=50.0,
        help="refused attempts risk was never asked about, reported to it as failures at "
        "most this often, each report carrying the count of those left out since the last "
        "(risk counts every failure without one call per refusal)",
    )
    geoip_database: Path | None = env(
        "IDENTITY_GEOIP_DATABASE",
        default=None,
        help="MaxMind-format country database (.mmdb) for blocked countries; unset = the "
        "bundled iptocc data",
    )

    def hash_slot_plan(self) -> HashSlots:
        total = self.hash_slots if self.hash_slots is not None else _usable_cores()
        reserved = self.hash_slots_for_known_devices
        if reserved is None:
            reserved = 1 if total >= 2 else 0
        try:
            return HashSlots(total=total, for_known_devices=reserved)
        except ValueError:
            raise ConfigError(
                "IDENTITY_HASH_SLOTS must be at least 1 and "
                "IDENTITY_HASH_SLOTS_FOR_KNOWN_DEVICES between 0 and IDENTITY_HASH_SLOTS - 1 "
                f"(got {total} and {reserved})"
            ) from None

    def sealing_key(self) -> bytes:
        if self.secrets_key is None:
            raise ConfigError("IDENTITY_SECRETS_KEY is required")
        return decode_key("IDENTITY_SECRETS_KEY", self.secrets_key)

    def pseudonym_key_bytes(self) -> bytes | None:
        if self.pseudonym_key is None:
            return None
        return decode_key("IDENTITY_PSEUDONYM_KEY", self.pseudonym_key)

    def validate(self) -> None:
        super().validate()
        if self.secrets_key is None:
            raise ConfigError(
                "IDENTITY_SECRETS_KEY is required: 32 random bytes in base64 "
                "(openssl rand -base64 32)"
            )
        decode_key("IDENTITY_SECRETS_KEY", self.secrets_key)
        if self.pseudonym_key is not None:
            decode_key("IDENTITY_PSEUDONYM_KEY", self.pseudonym_key)
        if not 30 <= self.access_token_seconds <= MAX_ACCESS_TOKEN_SECONDS:
            raise ConfigError("IDENTITY_ACCESS_TOKEN_SECONDS must be between 30 and 600")
        if self.revocation_replay_seconds < 0:
            raise ConfigError("IDENTITY_REVOCATION_REPLAY_SECONDS must not be negative")
        if self.refresh_token_days < 1:
            raise ConfigError("IDENTITY_REFRESH_TOKEN_DAYS must be at least 1")
        if self.cooloff_hours < 0:
            raise ConfigError("IDENTITY_COOLOFF_HOURS must not be negative")
        if self.key_rotation_hours <= 0:
            raise ConfigError("IDENTITY_KEY_ROTATION_HOURS must be positive")
        from services.identity.clients.external import parse_providers

        parse_providers(self.oidc_providers)
        if not 5 <= self.device_proof_seconds <= 600:
            raise ConfigError("IDENTITY_DEVICE_PROOF_SECONDS must be between 5 and 600")
        if self.forced_reset_batch < 1:
            raise ConfigError("IDENTITY_FORCED_RESET_BATCH must be at least 1")
        if self.risk_timeout_seconds <= 0:
            raise ConfigError("IDENTITY_RISK_TIMEOUT_SECONDS must be positive")
        if not self.webauthn_rp_id or not self.webauthn_origins:
            raise ConfigError("IDENTITY_WEBAUTHN_RP_ID and IDENTITY_WEBAUTHN_ORIGINS are required")
        self.hash_slot_plan()
        if self.hash_queue < 0:
            raise ConfigError("IDENTITY_HASH_QUEUE must not be negative")
        if self.hash_wait_seconds <= 0 or self.known_device_hash_wait_seconds <= 0:
            raise ConfigError(
                "IDENTITY_HASH_WAIT_SECONDS and IDENTITY_KNOWN_DEVICE_HASH_WAIT_SECONDS "
                "must be positive"
            )
        if self.refusal_reports_per_second < 0:
            raise ConfigError("IDENTITY_REFUSAL_REPORTS_PER_SECOND must not be negative")
        if self.pwned_range_url and not self.pwned_range_url.startswith(("http://", "https://")):
            raise ConfigError("IDENTITY_PWNED_RANGE_URL must be an http(s) URL")


def _usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1
