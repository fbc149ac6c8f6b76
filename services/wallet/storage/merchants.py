"""Merchants, their stores and the keys their registers send. SQL only."""

from __future__ import annotations

import secrets
import uuid

import asyncpg

from services.runtime.errors import AlreadyExists, NotFound
from services.wallet.domain.codes import code_hash
from services.wallet.domain.merchants import Merchant, StoreRow


class Merchants:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def register_merchant(self, name: str, category: str) -> tuple[Merchant, str]:
        """The new merchant and its register key (only its hash is kept)."""
        key = secrets.token_urlsafe(32)
        merchant_id = uuid.uuid4()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "insert into ledger_accounts (id, kind) values ($1, 'merchant')", merchant_id
            )
            await conn.execute(
                "insert into merchants (id, name, category, key_hash) values ($1, $2, $3, $4)",
                merchant_id,
                name,
                category,
                code_hash(key),
            )
        return Merchant(merchant_id, name, category), key

    async def merchant_by_key(self, key: str) -> Merchant | None:
        row = await self._pool.fetchrow(
            "select id, name, category from merchants where key_hash = $1", code_hash(key)
        )
        return None if row is None else Merchant(row["id"], row["name"], row["category"])

    async def register_store(self, merchant_id: uuid.UUID, store_code: str, name: str) -> uuid.UUID:
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("select true from merchants where id = $1", merchant_id):
                raise NotFound("MERCHANT_NOT_FOUND", "no such merchant")
            store_id = await conn.fetchval(
                "insert into stores (id, merchant_id, store_code, name) values ($1, $2, $3, $4)"
                " on conflict (merchant_id, store_code) do nothing returning id",
                uuid.uuid4(),
                merchant_id,
                store_code,
                name,
            )
        if store_id is None:
            raise AlreadyExists("STORE_EXISTS", "the merchant already has a store with this code")
        return uuid.UUID(str(store_id))

    async def store_of(self, merchant_id: uuid.UUID, store_id: uuid.UUID) -> StoreRow:
        row = await self._pool.fetchrow(
            "select id, merchant_id, name from stores where id = $1 and merchant_id = $2",
            store_id,
            merchant_id,
        )
        if row is None:
            raise NotFound("STORE_NOT_FOUND", "no such store for this merchant")
        return StoreRow(row["id"], row["merchant_id"], row["name"])

    async def stores_of(self, merchant_id: uuid.UUID, *, limit: int) -> list[StoreRow]:
        """Up to ``limit`` of the merchant's stores (which ones, when it has more, is
        left to the database)."""
        rows = await self._pool.fetch(
            "select id, merchant_id, name from stores where merchant_id = $1 limit $2",
            merchant_id,
            limit,
        )
        return [StoreRow(row["id"], row["merchant_id"], row["name"]) for row in rows]
