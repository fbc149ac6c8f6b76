"""Partners, credentials, merchants, stores and grants: SQL only."""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

import asyncpg

from services.gateway.domain.partners import Credential, MerchantGrant, Partner

Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


async def load_partner(db: Db, partner_id: uuid.UUID) -> Partner | None:
    row = await db.fetchrow(
        "select partner_id, name, status, scopes, requests_per_minute"
        " from partners where partner_id = $1",
        partner_id,
    )
    if row is None:
        return None
    grants = await db.fetch(
        "select g.merchant_id, array_remove(array_agg(s.store_id), null) as stores"
        " from partner_grants g left join partner_store_grants s"
        "   on s.partner_id = g.partner_id and s.merchant_id = g.merchant_id"
        " where g.partner_id = $1 group by g.merchant_id order by g.merchant_id",
        partner_id,
    )
    credentials = await db.fetch(
        "select credential_id, kind, secret_hash, public_jwk, created_at"
        " from partner_credentials where partner_id = $1 and revoked_at is null"
        " order by created_at",
        partner_id,
    )
    return Partner(
        partner_id=row["partner_id"],
        name=row["name"],
        status=row["status"],
        scopes=frozenset(row["scopes"]),
        requests_per_minute=row["requests_per_minute"],
        grants=tuple(
            MerchantGrant(g["merchant_id"], frozenset(g["stores"]) if g["stores"] else None)
            for g in grants
        ),
        credentials=tuple(
            Credential(
                credential_id=c["credential_id"],
                kind=c["kind"],
                secret_hash=c["secret_hash"],
                public_jwk=c["public_jwk"],
                created_at=c["created_at"],
            )
            for c in credentials
        ),
    )


async def create_partner(
    db: Db, partner_id: uuid.UUID, name: str, scopes: list[str], requests_per_minute: int
) -> None:
    await db.execute(
        "insert into partners (partner_id, name, scopes, requests_per_minute)"
        " values ($1, $2, $3, $4)",
        partner_id,
        name,
        sorted(scopes),
        requests_per_minute,
    )


async def update_partner(
    db: Db,
    partner_id: uuid.UUID,
    *,
    status: str | None = None,
    scopes: list[str] | None = None,
    requests_per_minute: int | None = None,
) -> bool:
    result = await db.execute(
        "update partners set status = coalesce($2, status), scopes = coalesce($3, scopes),"
        " requests_per_minute = coalesce($4, requests_per_minute), updated_at = now()"
        " where partner_id = $1",
        partner_id,
        status,
        sorted(scopes) if scopes is not None else None,
        requests_per_minute,
    )
    return str(result).endswith(" 1")


async def add_credential(
    db: Db,
    partner_id: uuid.UUID,
    kind: str,
    *,
    secret_hash: str | None = None,
    public_jwk: dict[str, Any] | None = None,
) -> uuid.UUID:
    credential_id = uuid.uuid4()
    await db.execute(
        "insert into partner_credentials (credential_id, partner_id, kind, secret_hash,"
        " public_jwk) values ($1, $2, $3, $4, $5)",
        credential_id,
        partner_id,
        kind,
        secret_hash,
        public_jwk,
    )
    return credential_id


async def revoke_credential(db: Db, partner_id: uuid.UUID, credential_id: uuid.UUID) -> bool:
    result = await db.execute(
        "update partner_credentials set revoked_at = now()"
        " where partner_id = $1 and credential_id = $2 and revoked_at is null",
        partner_id,
        credential_id,
    )
    return str(result).endswith(" 1")


async def add_merchant(db: Db, merchant_id: uuid.UUID, name: str, sealed_key: bytes) -> None:
    await db.execute(
        "insert into merchants (merchant_id, name, sealed_key) values ($1, $2, $3)"
        " on conflict (merchant_id) do update set name = $2, sealed_key = $3",
        merchant_id,
        name,
        sealed_key,
    )


async def add_store(
    db: Db, store_id: uuid.UUID, merchant_id: uuid.UUID, store_code: str, name: str
) -> None:
    await db.execute(
        "insert into stores (store_id, merchant_id, store_code, name) values ($1, $2, $3, $4)"
        " on conflict (store_id) do update set store_code = $3, name = $4",
        store_id,
        merchant_id,
        store_code,
        name,
    )


async def grant(
    conn: asyncpg.Connection,
    partner_id: uuid.UUID,
    merchant_id: uuid.UUID,
    store_ids: list[uuid.UUID] | None,
) -> None:
    """Grant a merchant (every store when ``store_ids`` is None), replacing an earlier grant."""
    async with conn.transaction():
        await conn.execute(
            "delete from partner_grants where partner_id = $1 and merchant_id = $2",
            partner_id,
            merchant_id,
        )
        await conn.execute(
            "insert into partner_grants (partner_id, merchant_id) values ($1, $2)",
            partner_id,
            merchant_id,
        )
        if store_ids:
            await conn.executemany(
                "insert into partner_store_grants (partner_id, merchant_id, store_id)"
                " values ($1, $2, $3)",
                [(partner_id, merchant_id, store_id) for store_id in store_ids],
            )


async def sealed_merchant_key(db: Db, merchant_id: uuid.UUID) -> bytes | None:
    value = await db.fetchval(
        "select sealed_key from merchants where merchant_id = $1", merchant_id
    )
    return bytes(value) if value is not None else None


async def merchant_of_store(db: Db, store_id: uuid.UUID) -> uuid.UUID | None:
    value = await db.fetchval("select merchant_id from stores where store_id = $1", store_id)
    return value if isinstance(value, uuid.UUID) else None


async def merchants(db: Db, merchant_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "select merchant_id, name from merchants where merchant_id = any($1)"
        " order by name, merchant_id",
        merchant_ids,
    )
    return [dict(row) for row in rows]


async def stores_of(db: Db, merchant_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "select store_id, merchant_id, store_code, name from stores where merchant_id = $1"
        " order by store_code, store_id",
        merchant_id,
    )
    return [dict(row) for row in rows]


async def log_change(
    db: Db, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None
) -> None:
    await db.execute(
        "insert into admin_log (actor, action, subject, detail) values ($1, $2, $3, $4)",
        actor,
        action,
        subject,
        detail or {},
    )


async def remember_jti(db: Db, partner_id: uuid.UUID, jti: str, expires_at: float) -> bool:
    """True the first time ``jti`` is seen for the partner (RFC 7523 §3, item 7)."""
    first = await db.fetchval(
        "insert into assertion_jtis (partner_id, jti, expires_at)"
        " values ($1, $2, to_timestamp($3)) on conflict do nothing returning true",
        partner_id,
        jti,
        expires_at,
    )
    return first is not None


async def forget_expired(db: Db) -> None:
    await db.execute("delete from assertion_jtis where expires_at < now() - interval '5 minutes'")
    await db.execute("delete from rate_windows where window_start < now() - interval '10 minutes'")
    await db.execute("delete from idempotency_keys where created_at < now() - interval '7 days'")
