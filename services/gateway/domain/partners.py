"""Partners, what they may do, and for whom: pure rules, no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from services.gateway.domain.errors import Refusal, forbidden

SCOPES = (
    "payments:authorize",
    "payments:capture",
    "payments:void",
    "payments:refund",
    "payments:read",
    "topups:cash",
    "merchants:read",
    "webhooks:manage",
)
SCOPE_HELP = {
    "payments:authorize": "hold an amount against a person's payment code",
    "payments:capture": "capture a payment by code or authorization",
    "payments:void": "release an authorization",
    "payments:refund": "refund a captured payment",
    "payments:read": "read payments made through the gateway",
    "topups:cash": "accept cash top-ups at a register",
    "merchants:read": "read the merchants and stores the partner acts for",
    "webhooks:manage": "subscribe to events and read or replay deliveries",
}
MAX_LIVE_CREDENTIALS = 2  # of each kind: the old and the new one during a rotation


@dataclass(frozen=True)
class MerchantGrant:
    """A merchant the partner acts for: every store, or only ``store_ids``."""

    merchant_id: uuid.UUID
    store_ids: frozenset[uuid.UUID] | None  # None = every store of the merchant


@dataclass(frozen=True)
class Credential:
    credential_id: uuid.UUID
    kind: str  # "secret" or "key"
    secret_hash: str | None
    public_jwk: dict[str, object] | None
    created_at: datetime


@dataclass(frozen=True)
class Partner:
    partner_id: uuid.UUID
    name: str
    status: str
    scopes: frozenset[str]
    requests_per_minute: int
    grants: tuple[MerchantGrant, ...]
    credentials: tuple[Credential, ...]

    @property
    def client_id(self) -> str:
        return str(self.partner_id)

    @property
    def active(self) -> bool:
        return self.status == "active"

    def grant_for(self, merchant_id: uuid.UUID) -> MerchantGrant | None:
        for grant in self.grants:
            if grant.merchant_id == merchant_id:
                return grant
        return None


def require_scope(token_scopes: frozenset[str], partner: Partner, scope: str) -> None:
    """The token must carry the scope and the partner must still hold it."""
    if scope not in token_scopes or scope not in partner.scopes:
        raise forbidden("SCOPE_REQUIRED", f"this call needs the scope {scope}")


def require_store(
    partner: Partner, merchant_id: uuid.UUID | None, store_id: uuid.UUID
) -> uuid.UUID:
    """The merchant of ``store_id`` when the partner may act for that store.

    ``merchant_id`` is the store's merchant as the gateway knows it (None when the
    store is unknown); an unknown store and a foreign one get the same answer.
    """
    grant = None if merchant_id is None else partner.grant_for(merchant_id)
    if grant is None or (grant.store_ids is not None and store_id not in grant.store_ids):
        raise forbidden("STORE_NOT_GRANTED", "the partner may not act for this store")
    assert merchant_id is not None
    return merchant_id


def require_merchant(partner: Partner, merchant_id: uuid.UUID) -> MerchantGrant:
    grant = partner.grant_for(merchant_id)
    if grant is None:
        raise forbidden("MERCHANT_NOT_GRANTED", "the partner may not act for this merchant")
    return grant


def live_credentials(partner: Partner, kind: str) -> list[Credential]:
    return [credential for credential in partner.credentials if credential.kind == kind]


def check_room_for(partner: Partner, kind: str) -> None:
    if len(live_credentials(partner, kind)) >= MAX_LIVE_CREDENTIALS:
        raise Refusal(
            409,
            "TOO_MANY_CREDENTIALS",
            f"a partner holds at most {MAX_LIVE_CREDENTIALS} live credentials of a kind;"
            " remove the old one first",
        )


def normalise_scopes(scopes: list[str] | tuple[str, ...]) -> frozenset[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(unknown)}")
    return frozenset(scopes)
