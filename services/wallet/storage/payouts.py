"""Payout bank accounts, payouts of whole balances and the wind-down's notices. SQL only."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from services.runtime.errors import FailedPrecondition
from services.wallet.clients.outbox import (
    NOTICE_PAYOUT,
    NOTICE_WALLET_STATUS,
    NOTICE_WIND_DOWN,
    announcement,
    enqueue_all,
    order_payout,
    tell_payer,
)
from services.wallet.domain.ledger import PAYOUT_CLEARING
from services.wallet.domain.payouts import UnclaimedRow
from services.wallet.storage import idempotent, ledger, wallets


class Payouts:
    """``session_revoked`` is this replica's copy of identity's revocations."""

    def __init__(self, pool: asyncpg.Pool, session_revoked: Callable[[str], bool]) -> None:
        self._pool = pool
        self._session_revoked = session_revoked

    async def mark_balance_holders_notified(self, deadline: str, *, batch: int = 500) -> int:
        """Tell every positive-balance holder once, in short batches."""
        notified = 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "with due as (select w.id from wallets w join ledger_accounts a on a.id = w.id"
                    " where a.balance > 0 and w.wind_down_notified_at is null"
                    " order by w.id limit $1 for update of w skip locked)"
                    " update wallets w set wind_down_notified_at = now()"
                    " from due, ledger_accounts a"
                    " where w.id = due.id and a.id = w.id returning w.id, w.payer_id, a.balance",
                    batch,
                )
                for row in rows:
                    await tell_payer(
                        conn,
                        key=f"wind_down:{row['id']}",
                        payer_id=row["payer_id"],
                        kind=NOTICE_WIND_DOWN,
                        amount=int(row["balance"]),
                        balance_after=int(row["balance"]),
                        detail=f"claim your balance by {deadline}"[:200],
                    )
            notified += len(rows)
            if len(rows) < batch:
                return notified

    async def register_payout_account(
        self,
        wallet_id: uuid.UUID,
        *,
        bank_code: str,
        branch_code: str,
        account_number: str,
        holder_name: str,
        session_id: str = "",
    ) -> None:
        """Set where payouts go, until ``session_id`` is revoked; the holder is told of
        every new destination."""
        async with self._pool.acquire() as conn, conn.transaction():
            previous = await conn.fetchrow(
                "select bank_code, branch_code, account_number, holder_name"
                " from payout_accounts where wallet_id = $1 for update",
                wallet_id,
            )
            given = (bank_code, branch_code, account_number, holder_name)
            changed = previous is None or tuple(previous) != given
            # The same destination set again belongs to the newer session from now on.
            await conn.execute(
                "insert into payout_accounts (wallet_id, bank_code, branch_code, account_number,"
                " holder_name, session_id) values ($1, $2, $3, $4, $5, $6)"
                " on conflict (wallet_id) do update"
                " set bank_code = excluded.bank_code, branch_code = excluded.branch_code,"
                " account_number = excluded.account_number, holder_name = excluded.holder_name,"
                " session_id = excluded.session_id,"
                " updated_at = case when $7 then now() else payout_accounts.updated_at end",
                wallet_id,
                *given,
                session_id,
                changed,
            )
            if changed:
                # A session thief's first move is to point the payout at their own
                # account; the person hears of it at the registered address.
                await tell_payer(
                    conn,
                    key=f"payout_account:{wallet_id}:{uuid.uuid4()}",
                    payer_id=await wallets.payer_of(conn, wallet_id),
                    kind=NOTICE_WALLET_STATUS,
                    detail=(
                        f"payouts now go to bank {bank_code} branch {branch_code}"
                        f" account ****{account_number[-3:]}"
                    ),
                )

    async def claim_payout(
        self, wallet_id: uuid.UUID, *, idempotency_key: str, request_hash: str
    ) -> dict[str, Any]:
        """Pay out the whole balance: one entry now, the bank transfer through the outbox."""
        async with idempotent.idempotent(
            self._pool, f"payout:{wallet_id}", idempotency_key, request_hash
        ) as claim:
            if claim.replayed is not None:
                return claim.replayed
            conn = claim.conn
            wallet = await wallets.lock(conn, wallet_id)
            if wallet.status == "frozen":
                raise FailedPrecondition("WALLET_FROZEN", "the wallet is frozen")
            account = await conn.fetchrow(
                "select bank_code, branch_code, account_number, holder_name, session_id"
                " from payout_accounts p where wallet_id = $1 and not exists"
                " (select 1 from revoked_sessions r where r.session_id = p.session_id)",
                wallet_id,
            )
            # Set in a session since revoked: voiding the session is about to forget it.
            if account is None or self._session_revoked(account["session_id"]):
                raise FailedPrecondition(
                    "PAYOUT_ACCOUNT_REQUIRED", "register a payout bank account first"
                )
            amount = wallet.balance - await wallets.held(conn, wallet_id)
            if amount <= 0:
                raise FailedPrecondition("NOTHING_TO_PAY_OUT", "the balance is zero")
            posted = await ledger.post(
                conn,
                kind="payout",
                wallet_id=wallet_id,
                postings=[(wallet_id, -amount), (PAYOUT_CLEARING, amount)],
                counterparty=f"bank {account['bank_code']}-{account['branch_code']}",
            )
            await conn.execute(
                "insert into payouts (entry_id, wallet_id, amount, bank_code, branch_code,"
                " account_number, holder_name) values ($1, $2, $3, $4, $5, $6, $7)",
                posted.entry_id,
                wallet_id,
                amount,
                account["bank_code"],
                account["branch_code"],
                account["account_number"],
                account["holder_name"],
            )
            await order_payout(conn, posted.entry_id, amount, dict(account))
            await enqueue_all(
                conn,
                announcement(
                    notice_kind=NOTICE_PAYOUT,
                    outcome=None,
                    payer_id=wallet.payer_id,
                    wallet_id=wallet_id,
                    entry_id=posted.entry_id,
                    amount=amount,
                    balance_after=posted.balance_after,
                    counterparty="bank transfer",
                    occurred_at=posted.occurred_at,
                ),
            )
            return await claim.finish({"movement_id": str(posted.entry_id), "amount": amount})

    async def unclaimed(
        self, *, limit: int, after: uuid.UUID | None
    ) -> tuple[list[UnclaimedRow], int, int, uuid.UUID | None]:
        """(page, total, wallet count, next cursor) of balances not yet paid out."""
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(
                "select w.id, a.balance, w.wind_down_notified_at from wallets w"
                " join ledger_accounts a on a.id = w.id"
                " where a.balance > 0 and ($1::uuid is null or w.id > $1)"
                " order by w.id limit $2",
                after,
                limit + 1,
            )
            totals = await conn.fetchrow(
                "select coalesce(sum(balance), 0) as total, count(*) as wallets"
                " from ledger_accounts where kind = 'wallet' and balance > 0"
            )
        page = [
            UnclaimedRow(row["id"], int(row["balance"]), row["wind_down_notified_at"])
            for row in rows[:limit]
        ]
        more = page[-1].wallet_id if len(rows) > limit else None
        return page, int(totals["total"]), int(totals["wallets"]), more
