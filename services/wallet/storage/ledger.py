"""The double-entry ledger: journal entries and their postings. SQL only.

The database refuses what the code must never do (an unbalanced entry, a negative
wallet balance) even if a check is missed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from services.wallet.domain.ledger import Posted, Reconciliation, StatementLine


async def post(
    conn: asyncpg.Connection,
    *,
    kind: str,
    wallet_id: uuid.UUID,
    postings: Sequence[tuple[uuid.UUID, int]],
    counterparty: str = "",
    related: uuid.UUID | None = None,
    case_id: uuid.UUID | None = None,
) -> Posted:
    """Write one journal entry whose postings sum to zero."""
    entry_id = uuid.uuid4()
    occurred_at = await conn.fetchval(
        "insert into journal_entries (id, kind, wallet_id, related_entry_id, counterparty,"
        " case_id) values ($1, $2, $3, $4, $5, $6) returning created_at",
        entry_id,
        kind,
        wallet_id,
        related,
        counterparty,
        case_id,
    )
    lines = [(account, amount) for account, amount in postings if amount != 0]
    await conn.execute(
        "insert into postings (entry_id, account_id, amount)"
        " select $1, account, amount"
        " from unnest($2::uuid[], $3::bigint[]) as t(account, amount)",
        entry_id,
        [account for account, _ in lines],
        [amount for _, amount in lines],
    )
    balance = await conn.fetchval("select balance from ledger_accounts where id = $1", wallet_id)
    return Posted(entry_id, occurred_at, int(balance))


class Ledger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def statement(
        self, wallet_id: uuid.UUID, *, limit: int, after: int | None
    ) -> tuple[list[StatementLine], int | None]:
        """Newest first; paged by the wallet posting's id (commit order per wallet)."""
        rows = await self._pool.fetch(
            "select p.id, e.id as entry_id, e.kind, p.amount, p.balance_after,"
            " e.counterparty, e.created_at, e.related_entry_id"
            " from postings p join journal_entries e on e.id = p.entry_id"
            " where p.account_id = $1 and ($2::bigint is null or p.id < $2)"
            " order by p.id desc limit $3",
            wallet_id,
            after,
            limit + 1,
        )
        lines = [
            StatementLine(
                movement_id=row["entry_id"],
                kind=row["kind"],
                amount=int(row["amount"]),
                balance_after=int(row["balance_after"]),
                counterparty=row["counterparty"],
                occurred_at=row["created_at"],
                related_movement_id=row["related_entry_id"],
            )
            for row in rows[:limit]
        ]
        more = int(rows[limit - 1]["id"]) if len(rows) > limit else None
        return lines, more

    async def reconcile(self) -> Reconciliation:
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            differences = await conn.fetch(
                "select a.id, a.balance, coalesce(sum(p.amount), 0) as posted"
                " from ledger_accounts a left join postings p on p.account_id = a.id"
                " where a.kind = 'wallet' group by a.id"
                " having a.balance <> coalesce(sum(p.amount), 0) order by a.id"
            )
            ledger_sum = await conn.fetchval("select coalesce(sum(amount), 0) from postings")
            unbalanced = await conn.fetch(
                "select e.id from journal_entries e left join postings p on p.entry_id = e.id"
                " group by e.id having coalesce(sum(p.amount), 0) <> 0 or count(p.id) < 2"
                " order by e.id"
            )
            checked = await conn.fetchval("select count(*) from ledger_accounts")
        return Reconciliation(
            differences=[(r["id"], int(r["balance"]), int(r["posted"])) for r in differences],
            ledger_sum=int(ledger_sum),
            unbalanced_entries=[r["id"] for r in unbalanced],
            accounts_checked=int(checked),
        )
