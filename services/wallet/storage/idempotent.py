"""The one way a money movement runs under an idempotency key.

Every movement is one short transaction that claims its key, replays the first
result of a finished request with that key, and otherwise does its work and
stores the result under the key before it commits. A concurrent first request
holds the key's index entry until it commits, so a retry racing it waits at the
claim and then sees its result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.runtime.errors import AlreadyExists


def key_reused() -> AlreadyExists:
    return AlreadyExists(
        "IDEMPOTENCY_KEY_REUSED", "this idempotency key was used for a different request"
    )


@dataclass
class Claim:
    """An idempotency key claimed inside the movement's transaction.

    ``replayed`` is the first request's result when it finished; ``in_progress``
    says the first request has not finished (an outside party's answer pending).
    Neither: this request is the first, and ``finish`` stores its result.
    """

    conn: asyncpg.Connection
    scope: str
    key: str
    replayed: dict[str, Any] | None = None
    in_progress: bool = False

    async def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        await store_result(self.conn, self.scope, self.key, result)
        return result


async def claim(conn: asyncpg.Connection, scope: str, key: str, request_hash: str) -> Claim:
    inserted = await conn.fetchval(
        "insert into idempotency_keys (scope, key, request_hash) values ($1, $2, $3)"
        " on conflict (scope, key) do nothing returning true",
        scope,
        key,
        request_hash,
    )
    if inserted:
        return Claim(conn, scope, key)
    row = await conn.fetchrow(
        "select request_hash, result from idempotency_keys where scope = $1 and key = $2",
        scope,
        key,
    )
    if row["request_hash"] != request_hash:
        raise key_reused()
    if row["result"] is None:
        return Claim(conn, scope, key, in_progress=True)
    return Claim(conn, scope, key, replayed=row["result"])


@asynccontextmanager
async def idempotent(
    pool: asyncpg.Pool, scope: str, key: str, request_hash: str
) -> AsyncIterator[Claim]:
    """One transaction with ``key`` claimed in ``scope``; see ``Claim``."""
    async with pool.acquire() as conn, conn.transaction():
        yield await claim(conn, scope, key, request_hash)


async def replay(
    db: asyncpg.Pool | asyncpg.Connection, scope: str, key: str, request_hash: str
) -> dict[str, Any] | None:
    """The first result of a finished request with this key, read before any new check.

    A retry must get the first answer even when the code it spent is gone or a
    switch has flipped since; the key is claimed later, in the money transaction.
    """
    row = await db.fetchrow(
        "select request_hash, result from idempotency_keys where scope = $1 and key = $2",
        scope,
        key,
    )
    if row is None or row["result"] is None:
        return None
    if row["request_hash"] != request_hash:
        raise key_reused()
    result: dict[str, Any] = row["result"]
    return result


async def store_result(
    conn: asyncpg.Connection, scope: str, key: str, result: dict[str, Any]
) -> None:
    await conn.execute(
        "update idempotency_keys set result = $3 where scope = $1 and key = $2",
        scope,
        key,
        result,
    )


async def release(conn: asyncpg.Connection, scope: str, key: str) -> None:
    """Free a key whose request was refused for good, so it can be used again."""
    await conn.execute(
        "delete from idempotency_keys where scope = $1 and key = $2 and result is null",
        scope,
        key,
    )


async def result_of_top_up(conn: asyncpg.Connection, top_up_id: Any) -> dict[str, Any] | None:
    stored = await conn.fetchval(
        "select i.result from top_ups t join idempotency_keys i"
        " on i.scope = 'top_up:' || t.wallet_id and i.key = t.idempotency_key"
        " where t.id = $1",
        top_up_id,
    )
    result: dict[str, Any] | None = stored
    return result
