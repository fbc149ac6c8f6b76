"""Partners as every request sees them, and the operator's changes to them.

Each replica keeps a partner for at most GATEWAY_PARTNER_CACHE_SECONDS (1 s by
default) before reading it again, so a revocation, a scope or grant change, or
a removed credential holds on every replica within that time without any
message between replicas.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from joserfc.jwk import import_key

from services.gateway.domain.partners import Partner, check_room_for, normalise_scopes
from services.gateway.domain.sealing import SecretBox
from services.gateway.storage import partners as store

# Client secrets are 256-bit random, so argon2's cost protects a leaked table,
# not a weak secret: modest parameters keep a token request cheap.
SECRET_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
MERCHANT_KEY_PURPOSE = "merchant-key"


class PartnerDirectory:
    def __init__(self, pool: asyncpg.Pool, cache_seconds: float) -> None:
        self._pool = pool
        self._cache_seconds = cache_seconds
        self._cache: dict[uuid.UUID, tuple[float, Partner | None]] = {}

    async def get(self, partner_id: uuid.UUID) -> Partner | None:
        cached = self._cache.get(partner_id)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        partner = await store.load_partner(self._pool, partner_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[partner_id] = (now + self._cache_seconds, partner)
        return partner


def parse_client_id(client_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(client_id)
    except (ValueError, TypeError, AttributeError):
        return None


class PartnerAdmin:
    """What operators do to partners (through ``python -m services.gateway.admin``).

    Every change is written to ``admin_log`` with the operator who made it; secrets
    and merchant keys never are.
    """

    def __init__(self, pool: asyncpg.Pool, box: SecretBox, actor: str = "operator") -> None:
        self._pool = pool
        self._box = box
        self._actor = actor

    async def _log(self, action: str, subject: object, **detail: Any) -> None:
        await store.log_change(self._pool, self._actor, action, str(subject), detail)

    async def show(self, partner_id: uuid.UUID) -> dict[str, Any]:
        """The partner as an operator needs it to rotate or revoke, without secrets."""
        partner = await self._partner(partner_id)
        return {
            "partner_id": partner.client_id,
            "name": partner.name,
            "status": partner.status,
            "scopes": sorted(partner.scopes),
            "requests_per_minute": partner.requests_per_minute,
            "grants": [
                {
                    "merchant_id": str(grant.merchant_id),
                    "stores": None
                    if grant.store_ids is None
                    else sorted(str(store_id) for store_id in grant.store_ids),
                }
                for grant in partner.grants
            ],
            "credentials": [
                {
                    "credential_id": str(credential.credential_id),
                    "kind": credential.kind,
                    "created_at": credential.created_at.isoformat(),
                    "kid": (credential.public_jwk or {}).get("kid"),
                }
                for credential in partner.credentials
            ],
        }

    async def create(self, name: str, scopes: list[str], requests_per_minute: int) -> uuid.UUID:
        normalise_scopes(scopes)
        if not name.strip() or len(name) > 200:
            raise ValueError("name must be 1 to 200 characters")
        if requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1")
        partner_id = uuid.uuid4()
        await store.create_partner(self._pool, partner_id, name, scopes, requests_per_minute)
        await self._log("partner.create", partner_id, name=name, scopes=sorted(scopes))
        return partner_id

    async def _partner(self, partner_id: uuid.UUID) -> Partner:
        partner = await store.load_partner(self._pool, partner_id)
        if partner is None:
            raise LookupError(f"no partner {partner_id}")
        return partner

    async def add_secret(self, partner_id: uuid.UUID) -> tuple[uuid.UUID, str]:
        """A new client secret, shown once; the old one stays valid until removed."""
        check_room_for(await self._partner(partner_id), "secret")
        secret = secrets.token_urlsafe(32)
        credential_id = await store.add_credential(
            self._pool, partner_id, "secret", secret_hash=SECRET_HASHER.hash(secret)
        )
        await self._log("credential.add", partner_id, credential_id=str(credential_id))
        return credential_id, secret

    async def add_key(self, partner_id: uuid.UUID, public_jwk: dict[str, Any]) -> uuid.UUID:
        """A public key for private_key_jwt: EC P-256 (ES256) or RSA of 2048 bits or more
        (RS256), the algorithms the token endpoint verifies; never a private key."""
        check_room_for(await self._partner(partner_id), "key")
        key = import_key(public_jwk)
        if key.is_private:
            raise ValueError("register the public key only; the private key stays with the partner")
        document = key.as_dict(private=False)
        if key.key_type == "EC":
            if document.get("crv") != "P-256":
                raise ValueError("an EC key must be on P-256 (ES256)")
        elif key.key_type == "RSA":
            modulus = base64.urlsafe_b64decode(str(document["n"]) + "==")
            if len(modulus.lstrip(b"\0")) * 8 < 2048:
                raise ValueError("an RSA key must have at least 2048 bits (RS256)")
        else:
            raise ValueError("the key must be EC P-256 or RSA")
        document.setdefault("kid", key.thumbprint())
        credential_id = await store.add_credential(
            self._pool, partner_id, "key", public_jwk=document
        )
        await self._log("credential.add", partner_id, credential_id=str(credential_id))
        return credential_id

    async def remove_credential(self, partner_id: uuid.UUID, credential_id: uuid.UUID) -> None:
        if not await store.revoke_credential(self._pool, partner_id, credential_id):
            raise LookupError(f"no live credential {credential_id} of partner {partner_id}")
        await self._log("credential.remove", partner_id, credential_id=str(credential_id))

    async def set_status(self, partner_id: uuid.UUID, status: str) -> None:
        if status not in ("active", "revoked"):
            raise ValueError("status must be active or revoked")
        if not await store.update_partner(self._pool, partner_id, status=status):
            raise LookupError(f"no partner {partner_id}")
        await self._log("partner.status", partner_id, status=status)

    async def update(
        self,
        partner_id: uuid.UUID,
        *,
        scopes: list[str] | None = None,
        requests_per_minute: int | None = None,
    ) -> None:
        if scopes is not None:
            normalise_scopes(scopes)
        if requests_per_minute is not None and requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1")
        if not await store.update_partner(
            self._pool, partner_id, scopes=scopes, requests_per_minute=requests_per_minute
        ):
            raise LookupError(f"no partner {partner_id}")
        await self._log(
            "partner.update", partner_id, scopes=scopes, requests_per_minute=requests_per_minute
        )

    async def add_merchant(self, merchant_id: uuid.UUID, name: str, merchant_key: str) -> None:
        """A merchant the gateway may act for, with the key the wallet issued to it."""
        sealed = self._box.seal(merchant_key, purpose=f"{MERCHANT_KEY_PURPOSE}:{merchant_id}")
        await store.add_merchant(self._pool, merchant_id, name, sealed)
        await self._log("merchant.add", merchant_id, name=name)

    async def add_store(
        self, store_id: uuid.UUID, merchant_id: uuid.UUID, store_code: str, name: str
    ) -> None:
        await store.add_store(self._pool, store_id, merchant_id, store_code, name)
        await self._log("store.add", store_id, merchant_id=str(merchant_id), name=name)

    async def grant(
        self, partner_id: uuid.UUID, merchant_id: uuid.UUID, store_ids: list[uuid.UUID] | None
    ) -> None:
        await self._partner(partner_id)
        async with self._pool.acquire() as conn:
            await store.grant(conn, partner_id, merchant_id, store_ids)
        await self._log(
            "partner.grant",
            partner_id,
            merchant_id=str(merchant_id),
            stores=None if store_ids is None else [str(s) for s in store_ids],
        )


def open_merchant_key(box: SecretBox, merchant_id: uuid.UUID, sealed: bytes) -> str:
    return box.open(sealed, purpose=f"{MERCHANT_KEY_PURPOSE}:{merchant_id}")
