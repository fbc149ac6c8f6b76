"""The cards a wallet is topped up from (processor tokens, never card numbers). SQL only."""

from __future__ import annotations

import uuid

import asyncpg

from services.runtime.errors import NotFound
from services.wallet.domain.wallets import FundingSourceRow

_SELECT = (
    "select id, wallet_id, processor_token, brand, last4, created_at,"
    " first_top_up_at is null as new_source from funding_sources"
)


def _source(row: asyncpg.Record) -> FundingSourceRow:
    return FundingSourceRow(
        id=row["id"],
        wallet_id=row["wallet_id"],
        processor_token=row["processor_token"],
        brand=row["brand"],
        last4=row["last4"],
        created_at=row["created_at"],
        new_source=bool(row["new_source"]),
    )


def source_not_found() -> NotFound:
    return NotFound("FUNDING_SOURCE_NOT_FOUND", "no such funding source")


class FundingSources:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add_funding_source(
        self, wallet_id: uuid.UUID, processor_token: str, brand: str, last4: str
    ) -> FundingSourceRow:
        async with self._pool.acquire() as conn:
            existing = await conn.fetchrow(
                _SELECT + " where wallet_id = $1 and processor_token = $2 and removed_at is null",
                wallet_id,
                processor_token,
            )
            if existing is not None:
                return _source(existing)
            row = await conn.fetchrow(
                "insert into funding_sources (id, wallet_id, processor_token, brand, last4)"
                " values ($1, $2, $3, $4, $5) returning id, wallet_id, processor_token, brand,"
                " last4, created_at, first_top_up_at is null as new_source",
                uuid.uuid4(),
                wallet_id,
                processor_token,
                brand,
                last4,
            )
        return _source(row)

    async def funding_sources(self, wallet_id: uuid.UUID) -> list[FundingSourceRow]:
        rows = await self._pool.fetch(
            _SELECT + " where wallet_id = $1 and removed_at is null order by created_at, id",
            wallet_id,
        )
        return [_source(row) for row in rows]

    async def funding_source(
        self, wallet_id: uuid.UUID, funding_source_id: uuid.UUID
    ) -> FundingSourceRow:
        row = await self._pool.fetchrow(
            _SELECT + " where id = $1 and wallet_id = $2 and removed_at is null",
            funding_source_id,
            wallet_id,
        )
        if row is None:
            raise source_not_found()
        return _source(row)

    async def remove_funding_source(
        self, wallet_id: uuid.UUID, funding_source_id: uuid.UUID
    ) -> None:
        removed = await self._pool.fetchval(
            "update funding_sources set removed_at = now()"
            " where id = $1 and wallet_id = $2 and removed_at is null returning true",
            funding_source_id,
            wallet_id,
        )
        if not removed:
            raise source_not_found()
