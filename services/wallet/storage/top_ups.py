"""Top-ups: reservations under the limits, their posting, cash codes at a register. SQL only.

A top-up from an outside party (a card, points) is reserved first and counts
toward the limits at once, so parallel requests cannot all pass the check while
the outside party is asked; it is posted when the outside party has answered.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from services.runtime.errors import FailedPrecondition
from services.wallet.clients.outbox import (
    NOTICE_TOP_UP,
    OUTCOME_TOP_UP_COMPLETED,
    announcement,
    enqueue_all,
)
from services.wallet.domain.ledger import CLEARING_BY_CHANNEL
from services.wallet.domain.limits import Limits, Room, TopUpUsage, broken_limit, room
from services.wallet.domain.merchants import StoreRow
from services.wallet.domain.top_ups import PendingTopUp
from services.wallet.domain.wallets import require_active
from services.wallet.storage import codes, idempotent, ledger, wallets
from services.wallet.storage.funding_sources import source_not_found

_USAGE = """
    with bounds as (
        select (date_trunc('day', now() at time zone $2)) at time zone $2 as day_start,
               (date_trunc('month', now() at time zone $2)) at time zone $2 as month_start
    )
    select
        coalesce(sum(t.amount) filter (where t.created_at >= b.day_start), 0) as day_amount,
        count(t.id) filter (where t.created_at >= b.day_start) as day_count,
        coalesce(sum(t.amount), 0) as month_amount,
        (select balance from ledger_accounts where id = $1) as balance,
        (select coalesce(sum(amount), 0) from top_ups
          where wallet_id = $1 and status = 'pending') as pending,
        (select coalesce(sum(amount), 0) from top_ups
          where funding_source_id = $4 and status = 'pending') as source_pending,
        (select created_at > now() - make_interval(days => $3) from wallets where id = $1)
            as new_wallet
    from bounds b
    left join top_ups t
      on t.wallet_id = $1 and t.status <> 'failed' and t.created_at >= b.month_start
    group by b.day_start
"""


def top_up_scope(wallet_id: uuid.UUID) -> str:
    return f"top_up:{wallet_id}"


def cash_scope(merchant_id: uuid.UUID) -> str:
    return f"cash:{merchant_id}"


class TopUps:
    def __init__(
        self,
        pool: asyncpg.Pool,
        limits: Limits,
        *,
        timezone: str,
        session_revoked: Callable[[str], bool],
    ) -> None:
        self._pool = pool
        self.limits = limits
        self._timezone = timezone
        self._session_revoked = session_revoked

    async def _usage(
        self,
        conn: asyncpg.Connection,
        wallet_id: uuid.UUID,
        funding_source_id: uuid.UUID | None = None,
    ) -> tuple[TopUpUsage, bool]:
        row = await conn.fetchrow(
            _USAGE, wallet_id, self._timezone, self.limits.new_wallet_days, funding_source_id
        )
        usage = TopUpUsage(
            day_amount=int(row["day_amount"]),
            day_count=int(row["day_count"]),
            month_amount=int(row["month_amount"]),
            balance=int(row["balance"]),
            pending=int(row["pending"]),
            source_pending=int(row["source_pending"]),
        )
        return usage, bool(row["new_wallet"])

    async def room(self, wallet_id: uuid.UUID) -> Room:
        async with self._pool.acquire() as conn:
            usage, new_wallet = await self._usage(conn, wallet_id)
        return room(self.limits, usage, new_wallet=new_wallet, new_source=False)

    async def _check_limits(
        self,
        conn: asyncpg.Connection,
        wallet_id: uuid.UUID,
        amount: int,
        *,
        new_source: bool,
        funding_source_id: uuid.UUID | None = None,
    ) -> None:
        usage, new_wallet = await self._usage(conn, wallet_id, funding_source_id)
        limit = broken_limit(
            self.limits, usage, amount, new_wallet=new_wallet, new_source=new_source
        )
        if limit is not None:
            left = room(self.limits, usage, new_wallet=new_wallet, new_source=new_source)
            raise FailedPrecondition(
                "LIMIT_EXCEEDED",
                f"the top-up exceeds the {limit.replace('_', ' ')} limit",
                metadata={"limit": limit, "largest_top_up": str(left.largest_top_up)},
            )

    async def replay(
        self, wallet_id: uuid.UUID, key: str, request_hash: str
    ) -> dict[str, Any] | None:
        return await idempotent.replay(self._pool, top_up_scope(wallet_id), key, request_hash)

    async def reserve(
        self,
        *,
        wallet_id: uuid.UUID,
        amount: int,
        session_id: str,
        idempotency_key: str,
        request_hash: str,
        funding_source_id: uuid.UUID | None = None,
    ) -> dict[str, Any] | PendingTopUp:
        """Reserve a top-up from the card ``funding_source_id`` (points without one),
        or return the first result of a retry, or the reservation a retry resumes.

        Nothing is credited here: the money belongs to the outside party until it
        has answered (``finish``).
        """
        channel = "points" if funding_source_id is None else "card"
        async with idempotent.idempotent(
            self._pool, top_up_scope(wallet_id), idempotency_key, request_hash
        ) as claim:
            if claim.replayed is not None:
                return claim.replayed
            conn = claim.conn
            if claim.in_progress:
                row = await conn.fetchrow(
                    "select t.id, t.channel, t.amount, case when t.channel = 'card'"
                    " then f.processor_token else w.payer_id end as source"
                    " from top_ups t join wallets w on w.id = t.wallet_id"
                    " left join funding_sources f on f.id = t.funding_source_id"
                    " where t.wallet_id = $1 and t.idempotency_key = $2 and t.status = 'pending'",
                    wallet_id,
                    idempotency_key,
                )
                if row is None:
                    # The first request finished between the claim's read and this
                    # one (each statement sees what was committed before it): its answer.
                    finished = await idempotent.replay(
                        conn, top_up_scope(wallet_id), idempotency_key, request_hash
                    )
                    if finished is not None:
                        return finished
                    raise FailedPrecondition("TOP_UP_IN_PROGRESS", "retry shortly")
                return PendingTopUp(row["id"], row["channel"], int(row["amount"]), row["source"])
            wallet = await wallets.lock(conn, wallet_id)
            require_active(wallet.status)
            source = wallet.payer_id
            new_source = False
            if funding_source_id is not None:
                card = await conn.fetchrow(
                    "select processor_token, first_top_up_at is null as new_source"
                    " from funding_sources where id = $1 and wallet_id = $2"
                    " and removed_at is null",
                    funding_source_id,
                    wallet_id,
                )
                if card is None:
                    raise source_not_found()
                # A card stays new until a top-up from it completes; until then
                # its reservations share the new-card allowance.
                source, new_source = card["processor_token"], card["new_source"]
            await self._check_limits(
                conn,
                wallet_id,
                amount,
                new_source=new_source,
                funding_source_id=funding_source_id,
            )
            top_up_id = uuid.uuid4()
            await conn.execute(
                "insert into top_ups (id, wallet_id, channel, amount, funding_source_id, status,"
                " session_id, idempotency_key) values ($1, $2, $3, $4, $5, 'pending', $6, $7)",
                top_up_id,
                wallet_id,
                channel,
                amount,
                funding_source_id,
                session_id,
                idempotency_key,
            )
        return PendingTopUp(top_up_id, channel, amount, source)

    async def finish(
        self, top_up_id: uuid.UUID, reference: str, *, decision_id: str = ""
    ) -> dict[str, Any]:
        """Post a top-up the outside party has done; a concurrent retry that finished first wins.

        ``reference`` is the outside party's id for it: the card charge or the
        points redemption.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            wallet_id = await conn.fetchval(
                "select wallet_id from top_ups where id = $1", top_up_id
            )
            if wallet_id is not None:
                # The wallet first, like every movement: a finish that took the
                # balance row before waiting for the wallet would deadlock with a
                # top-up holding the wallet and waiting for the balance row.
                await wallets.lock(conn, wallet_id)
            row = await conn.fetchrow(
                "update top_ups set status = 'completed', processor_charge_id = $2"
                " where id = $1 and status = 'pending'"
                " returning wallet_id, channel, amount, funding_source_id, session_id,"
                " idempotency_key",
                top_up_id,
                reference,
            )
            if row is None:
                stored = await idempotent.result_of_top_up(conn, top_up_id)
                if stored is None:
                    raise FailedPrecondition("TOP_UP_FAILED", "the top-up did not complete")
                return stored
            counterparty = "points"
            if row["funding_source_id"] is not None:
                source = await conn.fetchrow(
                    "update funding_sources set first_top_up_at = coalesce(first_top_up_at, now())"
                    " where id = $1 returning brand, last4",
                    row["funding_source_id"],
                )
                counterparty = f"{source['brand']} ****{source['last4']}"
            result = await _post_top_up(
                conn,
                top_up_id=top_up_id,
                wallet_id=row["wallet_id"],
                channel=row["channel"],
                amount=int(row["amount"]),
                counterparty=counterparty,
                session_id=row["session_id"],
                decision_id=decision_id,
            )
            await idempotent.store_result(
                conn, top_up_scope(row["wallet_id"]), row["idempotency_key"], result
            )
            return result

    async def fail(self, top_up_id: uuid.UUID) -> None:
        """The outside party refused: free the reservation and the key."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "update top_ups set status = 'failed' where id = $1 and status = 'pending'"
                " returning wallet_id, idempotency_key",
                top_up_id,
            )
            if row is not None:
                await idempotent.release(
                    conn, top_up_scope(row["wallet_id"]), row["idempotency_key"]
                )

    async def replay_cash(
        self, merchant_id: uuid.UUID, key: str, request_hash: str
    ) -> dict[str, Any] | None:
        return await idempotent.replay(self._pool, cash_scope(merchant_id), key, request_hash)

    async def accept_cash_top_up(
        self,
        *,
        code: str,
        amount: int,
        store: StoreRow,
        idempotency_key: str,
        request_hash: str,
        decision_id: str = "",
    ) -> dict[str, Any]:
        async with idempotent.idempotent(
            self._pool, cash_scope(store.merchant_id), idempotency_key, request_hash
        ) as claim:
            if claim.replayed is not None:
                return claim.replayed
            conn = claim.conn
            spent = await codes.spend(conn, code, "cash_top_up", self._session_revoked)
            wallet = await wallets.lock(conn, spent.wallet_id)
            require_active(wallet.status)
            await self._check_limits(conn, spent.wallet_id, amount, new_source=False)
            top_up_id = uuid.uuid4()
            channel = spent.channel or "cash_register"
            await conn.execute(
                "insert into top_ups (id, wallet_id, channel, amount, status, session_id,"
                " idempotency_key) values ($1, $2, $3, $4, 'completed', $5, $6)",
                top_up_id,
                spent.wallet_id,
                channel,
                amount,
                spent.session_id,
                f"cash:{store.merchant_id}:{idempotency_key}",
            )
            return await claim.finish(
                await _post_top_up(
                    conn,
                    top_up_id=top_up_id,
                    wallet_id=spent.wallet_id,
                    channel=channel,
                    amount=amount,
                    counterparty=store.name,
                    session_id=spent.session_id,
                    decision_id=decision_id,
                )
            )


async def _post_top_up(
    conn: asyncpg.Connection,
    *,
    top_up_id: uuid.UUID,
    wallet_id: uuid.UUID,
    channel: str,
    amount: int,
    counterparty: str,
    session_id: str,
    decision_id: str,
) -> dict[str, Any]:
    posted = await ledger.post(
        conn,
        kind="top_up",
        wallet_id=wallet_id,
        postings=[(wallet_id, amount), (CLEARING_BY_CHANNEL[channel], -amount)],
        counterparty=counterparty,
    )
    await conn.execute("update top_ups set entry_id = $2 where id = $1", top_up_id, posted.entry_id)
    await enqueue_all(
        conn,
        announcement(
            notice_kind=NOTICE_TOP_UP,
            outcome=OUTCOME_TOP_UP_COMPLETED,
            payer_id=await wallets.payer_of(conn, wallet_id),
            wallet_id=wallet_id,
            entry_id=posted.entry_id,
            amount=amount,
            balance_after=posted.balance_after,
            counterparty=counterparty,
            occurred_at=posted.occurred_at,
            session_id=session_id,
            decision_id=decision_id,
        ),
    )
    return {
        "movement_id": str(posted.entry_id),
        "amount": amount,
        "balance_after": posted.balance_after,
        "channel": channel,
        "occurred_at": posted.occurred_at.isoformat(),
    }
