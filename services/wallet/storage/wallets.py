"""Wallets, their ledger accounts and balances. SQL only.

Every movement takes the wallet row exclusively (``lock``), so checks of its
limits, balance and holds run one movement at a time; it is the payer's own row,
so stores of one merchant do not queue on each other. The balance row is locked
too: a statement that waited for a lock would otherwise return the balance as it
was before the movement it waited for.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.runtime.errors import FailedPrecondition, NotFound
from services.wallet.clients.outbox import NOTICE_WALLET_STATUS, tell_payer
from services.wallet.domain.wallets import LockedWallet, WalletRow

_SELECT = (
    "select w.id, w.payer_id, w.status, w.frozen_reason, a.balance, w.created_at"
    " from wallets w join ledger_accounts a on a.id = w.id"
)
_LOCK = (
    "select w.status, w.payer_id, a.balance from wallets w"
    " join ledger_accounts a on a.id = w.id where w.id = $1 for update of w, a"
)


def _wallet(row: asyncpg.Record) -> WalletRow:
    return WalletRow(
        id=row["id"],
        payer_id=row["payer_id"],
        status=row["status"],
        frozen_reason=row["frozen_reason"],
        balance=int(row["balance"]),
        created_at=row["created_at"],
    )


def wallet_not_found() -> NotFound:
    return NotFound("WALLET_NOT_FOUND", "no such wallet")


def not_enrolled() -> NotFound:
    return NotFound("WALLET_NOT_FOUND", "enroll first")


async def lock(conn: asyncpg.Connection, wallet_id: uuid.UUID) -> LockedWallet:
    row = await conn.fetchrow(_LOCK, wallet_id)
    if row is None:
        raise wallet_not_found()
    return LockedWallet(row["status"], row["payer_id"], int(row["balance"]))


async def held(conn: asyncpg.Connection, wallet_id: uuid.UUID) -> int:
    """Money authorized to merchants and not yet captured or released."""
    amount = await conn.fetchval(
        "select coalesce(sum(amount), 0) from authorizations"
        " where wallet_id = $1 and status = 'held' and hold_expires_at > now()",
        wallet_id,
    )
    return int(amount)


async def payer_of(conn: asyncpg.Connection, wallet_id: uuid.UUID) -> str:
    payer_id: str = await conn.fetchval("select payer_id from wallets where id = $1", wallet_id)
    return payer_id


async def by_payer(db: asyncpg.Pool | asyncpg.Connection, payer_id: str) -> WalletRow | None:
    row = await db.fetchrow(_SELECT + " where w.payer_id = $1", payer_id)
    return None if row is None else _wallet(row)


async def void_codes(conn: asyncpg.Connection, wallet_id: uuid.UUID) -> None:
    await conn.execute(
        "update one_time_codes set status = 'voided' where wallet_id = $1 and status = 'active'",
        wallet_id,
    )


class Wallets:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def enroll(self, payer_id: str) -> WalletRow:
        async with self._pool.acquire() as conn, conn.transaction():
            # Two enrolls of one payer at once must not create two ledger accounts.
            await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 7))", payer_id)
            existing = await by_payer(conn, payer_id)
            if existing is not None:
                return existing
            wallet_id = uuid.uuid4()
            await conn.execute(
                "insert into ledger_accounts (id, kind) values ($1, 'wallet')", wallet_id
            )
            await conn.execute(
                "insert into wallets (id, payer_id) values ($1, $2)", wallet_id, payer_id
            )
            row = await by_payer(conn, payer_id)
            assert row is not None
            return row

    async def wallet_of(self, payer_id: str) -> WalletRow:
        """The payer's wallet; NOT_FOUND until Enroll."""
        row = await by_payer(self._pool, payer_id)
        if row is None:
            raise not_enrolled()
        return row

    async def wallet_by_id(self, wallet_id: uuid.UUID) -> WalletRow:
        row = await self._pool.fetchrow(_SELECT + " where w.id = $1", wallet_id)
        if row is None:
            raise wallet_not_found()
        return _wallet(row)

    async def set_status(
        self, wallet_id: uuid.UUID, status: str, reason: str, *, notify: bool = True
    ) -> WalletRow:
        """Freeze (status 'frozen') or unfreeze ('active'); a closed wallet stays closed."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "select payer_id, status from wallets where id = $1 for update", wallet_id
            )
            if row is None:
                raise wallet_not_found()
            if row["status"] == "closed":
                raise FailedPrecondition("WALLET_CLOSED", "the wallet is closed")
            if row["status"] != status:
                await conn.execute(
                    "update wallets set status = $2, frozen_reason = $3 where id = $1",
                    wallet_id,
                    status,
                    reason if status == "frozen" else "",
                )
                if status == "frozen":
                    await void_codes(conn, wallet_id)
                if notify:
                    await tell_payer(
                        conn,
                        key=f"status:{wallet_id}:{uuid.uuid4()}",
                        payer_id=row["payer_id"],
                        kind=NOTICE_WALLET_STATUS,
                        detail=f"wallet {status}",
                    )
        return await self.wallet_by_id(wallet_id)

    async def close(self, payer_id: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            wallet_id = await conn.fetchval(
                "update wallets set status = 'closed', closed_at = now()"
                " where payer_id = $1 and status <> 'closed' returning id",
                payer_id,
            )
            if wallet_id is not None:
                await void_codes(conn, wallet_id)
                await conn.execute(
                    "update authorizations set status = 'voided'"
                    " where wallet_id = $1 and status = 'held'",
                    wallet_id,
                )
