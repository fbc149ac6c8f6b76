"""All SQL of the wallet: the ledger, limits, codes, merchants, compensation, payouts.

Every money movement is one short transaction that (1) claims its idempotency
key, (2) locks the wallet row, (3) checks the rules that depend on the wallet's
state (status, limits, balance), (4) writes one journal entry with postings that
sum to zero, and (5) enqueues its notice and its outcome for risk in the outbox.
The database refuses what the code must never do (an unbalanced entry, a
negative wallet balance, a refund above its payment) even if a check is missed.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.runtime.errors import AlreadyExists, FailedPrecondition, NotFound, invalid
from services.runtime.outbox import enqueue
from services.wallet.domain.codes import code_hash, new_numeric_code
from services.wallet.domain.compensation import (
    CARD_REFUND,
    WALLET_CREDIT,
    UnauthorizedMovement,
    method_for,
    split_reversal,
)
from services.wallet.domain.limits import Limits, Room, TopUpUsage, broken_limit, room

CARD_CLEARING = uuid.UUID("00000000-0000-0000-0000-00000000c001")
CASH_CLEARING = uuid.UUID("00000000-0000-0000-0000-00000000c002")
POINTS_CLEARING = uuid.UUID("00000000-0000-0000-0000-00000000c003")
COMPENSATION_EXPENSE = uuid.UUID("00000000-0000-0000-0000-00000000c004")
PAYOUT_CLEARING = uuid.UUID("00000000-0000-0000-0000-00000000c005")

CLEARING_BY_CHANNEL = {
    "card": CARD_CLEARING,
    "cash_register": CASH_CLEARING,
    "atm": CASH_CLEARING,
    "points": POINTS_CLEARING,
}

# Outbox topics, delivered by the relay wired in bootstrap.
NOTICE_TOPIC = "wallet.notice"
OUTCOME_TOPIC = "wallet.outcome"
PAYOUT_TOPIC = "wallet.payout"

# Mirrors of notify's NoticeKind and risk's Outcome numbers, kept in the outbox
# payload so the relay needs no knowledge of the movement to deliver it.
NOTICE_TOP_UP, NOTICE_PAYMENT, NOTICE_REFUND = 20, 21, 22
NOTICE_COMPENSATION, NOTICE_PAYOUT, NOTICE_WALLET_STATUS, NOTICE_WIND_DOWN = 23, 24, 25, 26
OUTCOME_TOP_UP_COMPLETED, OUTCOME_PAYMENT_CAPTURED, OUTCOME_PAYMENT_REFUNDED = 6, 7, 8


@dataclass(frozen=True)
class WalletRow:
    id: uuid.UUID
    payer_id: str
    status: str
    frozen_reason: str
    balance: int
    created_at: datetime


@dataclass(frozen=True)
class FundingSourceRow:
    id: uuid.UUID
    wallet_id: uuid.UUID
    processor_token: str
    brand: str
    last4: str
    created_at: datetime
    new_source: bool


@dataclass(frozen=True)
class PendingCardTopUp:
    """A card top-up reserved under the limits, waiting for its charge."""

    top_up_id: uuid.UUID
    processor_token: str
    amount: int


@dataclass(frozen=True)
class PendingPointsTopUp:
    """A points top-up reserved under the limits, waiting for the loyalty program."""

    top_up_id: uuid.UUID
    # The loyalty program knows its members by the wallet's payer ID.
    payer_id: str
    amount: int


@dataclass(frozen=True)
class CodeHolder:
    """Who a live one-time code belongs to, read before it is spent (for risk)."""

    wallet_id: uuid.UUID
    payer_id: str
    device_id: str
    session_id: str
    channel: str | None


@dataclass(frozen=True)
class Merchant:
    id: uuid.UUID
    name: str
    category: str


@dataclass(frozen=True)
class StoreRow:
    id: uuid.UUID
    merchant_id: uuid.UUID
    name: str


@dataclass(frozen=True)
class StatementLine:
    movement_id: uuid.UUID
    kind: str
    amount: int
    balance_after: int
    counterparty: str
    occurred_at: datetime
    related_movement_id: uuid.UUID | None


@dataclass(frozen=True)
class Reconciliation:
    differences: list[tuple[uuid.UUID, int, int]]
    ledger_sum: int
    unbalanced_entries: list[uuid.UUID]
    accounts_checked: int

    @property
    def balanced(self) -> bool:
        return not self.differences and self.ledger_sum == 0 and not self.unbalanced_entries


@dataclass(frozen=True)
class CompensationLineRow:
    movement_id: uuid.UUID
    wallet_id: uuid.UUID
    amount: int
    method: str
    status: str
    compensation_entry_id: uuid.UUID | None
    processor_charge_id: str | None


@dataclass(frozen=True)
class UnclaimedRow:
    wallet_id: uuid.UUID
    balance: int
    notified_at: datetime | None


class _InProgress:
    """An idempotency key whose first request has not finished (a card charge in flight)."""


IN_PROGRESS = _InProgress()


def encode_page_token(*parts: str) -> str:
    return base64.urlsafe_b64encode("|".join(parts).encode()).decode()


def decode_page_token(token: str, field: str, parts: int) -> list[str]:
    try:
        decoded = base64.urlsafe_b64decode(token.encode()).decode().split("|")
    except (ValueError, UnicodeDecodeError):
        raise invalid(field, "is not a token from a previous page") from None
    if len(decoded) != parts:
        raise invalid(field, "is not a token from a previous page")
    return decoded


class WalletStore:
    """The wallet's database, behind use-case sized methods.

    ``session_revoked`` says whether identity has revoked a session (this replica's
    copy of the revocation stream): a code or hold of such a session is refused
    even before ``void_sessions`` has voided it in the database. ``void_sessions``
    also records the session in ``revoked_sessions``, and the code, hold, cash code
    and payout paths refuse what a recorded session made: that record outlives this
    replica's memory and identity's announcement of the revocation.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        limits: Limits,
        *,
        timezone: str = "Asia/Tokyo",
        session_revoked: Callable[[str], bool] | None = None,
    ):
        self.pool = pool
        self.limits = limits
        self.timezone = timezone
        self.session_revoked = session_revoked or _never_revoked

    # ---- wallets -------------------------------------------------------------------

    async def enroll(self, payer_id: str) -> WalletRow:
        async with self.pool.acquire() as conn, conn.transaction():
            # Two enrolls of one payer at once must not create two ledger accounts.
            await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 7))", payer_id)
            existing = await self._wallet_by_payer(conn, payer_id)
            if existing is not None:
                return existing
            wallet_id = uuid.uuid4()
            await conn.execute(
                "insert into ledger_accounts (id, kind) values ($1, 'wallet')", wallet_id
            )
            await conn.execute(
                "insert into wallets (id, payer_id) values ($1, $2)", wallet_id, payer_id
            )
            row = await self._wallet_by_payer(conn, payer_id)
            assert row is not None
            return row

    async def wallet_of(self, payer_id: str) -> WalletRow:
        """The payer's wallet; NOT_FOUND until Enroll."""
        async with self.pool.acquire() as conn:
            row = await self._wallet_by_payer(conn, payer_id)
        if row is None:
            raise NotFound("WALLET_NOT_FOUND", "enroll first")
        return row

    async def wallet_by_id(self, wallet_id: uuid.UUID) -> WalletRow:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(_WALLET_SELECT + " where w.id = $1", wallet_id)
        if row is None:
            raise NotFound("WALLET_NOT_FOUND", "no such wallet")
        return _wallet(row)

    async def _wallet_by_payer(self, conn: asyncpg.Connection, payer_id: str) -> WalletRow | None:
        row = await conn.fetchrow(_WALLET_SELECT + " where w.payer_id = $1", payer_id)
        return None if row is None else _wallet(row)

    async def set_status(
        self, wallet_id: uuid.UUID, status: str, reason: str, *, notify: bool = True
    ) -> WalletRow:
        """Freeze (status 'frozen') or unfreeze ('active'); a closed wallet stays closed."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "select payer_id, status from wallets where id = $1 for update", wallet_id
            )
            if row is None:
                raise NotFound("WALLET_NOT_FOUND", "no such wallet")
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
                    await self._void_codes(conn, wallet_id)
                if notify:
                    await enqueue(
                        conn,
                        topic=NOTICE_TOPIC,
                        idempotency_key=f"status:{wallet_id}:{uuid.uuid4()}",
                        payload={
                            "payer_id": row["payer_id"],
                            "kind": NOTICE_WALLET_STATUS,
                            "detail": f"wallet {status}",
                        },
                    )
        return await self.wallet_by_id(wallet_id)

    async def close(self, payer_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            wallet_id = await conn.fetchval(
                "update wallets set status = 'closed', closed_at = now()"
                " where payer_id = $1 and status <> 'closed' returning id",
                payer_id,
            )
            if wallet_id is not None:
                await self._void_codes(conn, wallet_id)
                await conn.execute(
                    "update authorizations set status = 'voided'"
                    " where wallet_id = $1 and status = 'held'",
                    wallet_id,
                )

    async def _void_codes(self, conn: asyncpg.Connection, wallet_id: uuid.UUID) -> None:
        await conn.execute(
            "update one_time_codes set status = 'voided'"
            " where wallet_id = $1 and status = 'active'",
            wallet_id,
        )

    # ---- limits --------------------------------------------------------------------

    async def _usage(
        self,
        conn: asyncpg.Connection,
        wallet_id: uuid.UUID,
        funding_source_id: uuid.UUID | None = None,
    ) -> tuple[TopUpUsage, bool]:
        row = await conn.fetchrow(
            """
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
            """,
            wallet_id,
            self.timezone,
            self.limits.new_wallet_days,
            funding_source_id,
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
        async with self.pool.acquire() as conn:
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

    async def _lock_wallet(self, conn: asyncpg.Connection, wallet_id: uuid.UUID) -> asyncpg.Record:
        row = await conn.fetchrow(_LOCK_WALLET, wallet_id)
        if row is None:
            raise NotFound("WALLET_NOT_FOUND", "no such wallet")
        return row

    # ---- idempotency ---------------------------------------------------------------

    async def _claim_key(
        self, conn: asyncpg.Connection, scope: str, key: str, request_hash: str
    ) -> dict[str, Any] | _InProgress | None:
        """None when this request is the first with ``key``; else the first result.

        A concurrent first request holds the key's index entry until it commits,
        so a retry racing it waits here and then sees its result.
        """
        inserted = await conn.fetchval(
            "insert into idempotency_keys (scope, key, request_hash) values ($1, $2, $3)"
            " on conflict (scope, key) do nothing returning true",
            scope,
            key,
            request_hash,
        )
        if inserted:
            return None
        row = await conn.fetchrow(
            "select request_hash, result from idempotency_keys where scope = $1 and key = $2",
            scope,
            key,
        )
        if row["request_hash"] != request_hash:
            raise AlreadyExists(
                "IDEMPOTENCY_KEY_REUSED",
                "this idempotency key was used for a different request",
            )
        if row["result"] is None:
            return IN_PROGRESS
        result: dict[str, Any] = row["result"]
        return result

    async def replay(self, scope: str, key: str, request_hash: str) -> dict[str, Any] | None:
        """The first result of a finished request with this key, read before any new check.

        A retry must get the first answer even when the code it spent is gone or
        a switch has flipped since; the key is claimed later, in the money transaction.
        """
        row = await self.pool.fetchrow(
            "select request_hash, result from idempotency_keys where scope = $1 and key = $2",
            scope,
            key,
        )
        if row is None or row["result"] is None:
            return None
        if row["request_hash"] != request_hash:
            raise AlreadyExists(
                "IDEMPOTENCY_KEY_REUSED",
                "this idempotency key was used for a different request",
            )
        result: dict[str, Any] = row["result"]
        return result

    async def _store_result(
        self, conn: asyncpg.Connection, scope: str, key: str, result: dict[str, Any]
    ) -> None:
        await conn.execute(
            "update idempotency_keys set result = $3 where scope = $1 and key = $2",
            scope,
            key,
            result,
        )

    # ---- posting -------------------------------------------------------------------

    async def _post(
        self,
        conn: asyncpg.Connection,
        *,
        kind: str,
        wallet_id: uuid.UUID,
        postings: Sequence[tuple[uuid.UUID, int]],
        counterparty: str = "",
        related: uuid.UUID | None = None,
        case_id: uuid.UUID | None = None,
    ) -> tuple[uuid.UUID, datetime, int]:
        """Write one journal entry; returns its id, time and the wallet's balance after it."""
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
        balance = await conn.fetchval(
            "select balance from ledger_accounts where id = $1", wallet_id
        )
        return entry_id, occurred_at, int(balance)

    async def _announce(
        self,
        conn: asyncpg.Connection,
        *,
        notice_kind: int,
        outcome: int | None,
        payer_id: str,
        wallet_id: uuid.UUID,
        entry_id: uuid.UUID,
        amount: int,
        balance_after: int,
        counterparty: str,
        occurred_at: datetime,
        session_id: str = "",
        decision_id: str = "",
    ) -> None:
        """The movement's notice to the payer and its outcome for risk's victim queries."""
        common = {
            "payer_id": payer_id,
            "wallet_id": str(wallet_id),
            "movement_id": str(entry_id),
            "amount": amount,
            "occurred_at": occurred_at.isoformat(),
        }
        await enqueue(
            conn,
            topic=NOTICE_TOPIC,
            idempotency_key=f"notice:{entry_id}",
            payload={
                **common,
                "kind": notice_kind,
                "counterparty": counterparty[:200],
                "balance_after": balance_after,
            },
        )
        if outcome is not None:
            await enqueue(
                conn,
                topic=OUTCOME_TOPIC,
                idempotency_key=f"outcome:{entry_id}",
                payload={
                    **common,
                    "outcome": outcome,
                    "session_id": session_id,
                    "decision_id": decision_id,
                },
            )

    # ---- funding sources -----------------------------------------------------------

    async def add_funding_source(
        self, wallet_id: uuid.UUID, processor_token: str, brand: str, last4: str
    ) -> FundingSourceRow:
        async with self.pool.acquire() as conn:
            existing = await conn.fetchrow(
                _SOURCE_SELECT + " where wallet_id = $1 and processor_token = $2"
                " and removed_at is null",
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
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                _SOURCE_SELECT + " where wallet_id = $1 and removed_at is null"
                " order by created_at, id",
                wallet_id,
            )
        return [_source(row) for row in rows]

    async def funding_source(
        self, wallet_id: uuid.UUID, funding_source_id: uuid.UUID
    ) -> FundingSourceRow:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                _SOURCE_SELECT + " where id = $1 and wallet_id = $2 and removed_at is null",
                funding_source_id,
                wallet_id,
            )
        if row is None:
            raise NotFound("FUNDING_SOURCE_NOT_FOUND", "no such funding source")
        return _source(row)

    async def remove_funding_source(
        self, wallet_id: uuid.UUID, funding_source_id: uuid.UUID
    ) -> None:
        async with self.pool.acquire() as conn:
            removed = await conn.fetchval(
                "update funding_sources set removed_at = now()"
                " where id = $1 and wallet_id = $2 and removed_at is null returning true",
                funding_source_id,
                wallet_id,
            )
        if not removed:
            raise NotFound("FUNDING_SOURCE_NOT_FOUND", "no such funding source")

    # ---- top-ups -------------------------------------------------------------------

    async def begin_card_top_up(
        self,
        *,
        wallet_id: uuid.UUID,
        funding_source_id: uuid.UUID,
        amount: int,
        session_id: str,
        idempotency_key: str,
        request_hash: str,
    ) -> dict[str, Any] | PendingCardTopUp:
        """Reserve a card top-up under the limits, or return the first result of a retry.

        The reservation counts toward the limits at once, so parallel requests
        cannot all pass the check while their charges are in flight.
        """
        scope = f"top_up:{wallet_id}"
        async with self.pool.acquire() as conn, conn.transaction():
            first = await self._claim_key(conn, scope, idempotency_key, request_hash)
            if isinstance(first, dict):
                return first
            if first is IN_PROGRESS:
                row = await conn.fetchrow(
                    "select t.id, t.amount, f.processor_token from top_ups t"
                    " join funding_sources f on f.id = t.funding_source_id"
                    " where t.wallet_id = $1 and t.idempotency_key = $2 and t.status = 'pending'",
                    wallet_id,
                    idempotency_key,
                )
                if row is None:
                    raise FailedPrecondition("TOP_UP_IN_PROGRESS", "retry shortly")
                return PendingCardTopUp(row["id"], row["processor_token"], int(row["amount"]))
            wallet = await self._lock_wallet(conn, wallet_id)
            _require_active(wallet["status"])
            source = await conn.fetchrow(
                "select processor_token, first_top_up_at is null as new_source"
                " from funding_sources where id = $1 and wallet_id = $2 and removed_at is null",
                funding_source_id,
                wallet_id,
            )
            if source is None:
                raise NotFound("FUNDING_SOURCE_NOT_FOUND", "no such funding source")
            # A card stays new until a top-up from it completes; until then its
            # reservations share the new-card allowance.
            await self._check_limits(
                conn,
                wallet_id,
                amount,
                new_source=source["new_source"],
                funding_source_id=funding_source_id,
            )
            top_up_id = uuid.uuid4()
            await conn.execute(
                "insert into top_ups (id, wallet_id, channel, amount, funding_source_id, status,"
                " session_id, idempotency_key) values ($1, $2, 'card', $3, $4, 'pending', $5, $6)",
                top_up_id,
                wallet_id,
                amount,
                funding_source_id,
                session_id,
                idempotency_key,
            )
        return PendingCardTopUp(top_up_id, source["processor_token"], amount)

    async def finish_top_up(
        self, top_up_id: uuid.UUID, reference: str, *, decision_id: str = ""
    ) -> dict[str, Any]:
        """Post a top-up the outside party has done; a concurrent retry that finished first wins.

        ``reference`` is the outside party's id for it: the card charge or the
        points redemption.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            wallet_id = await conn.fetchval(
                "select wallet_id from top_ups where id = $1", top_up_id
            )
            if wallet_id is not None:
                # The wallet first, like every movement: a finish that took the
                # balance row before waiting for the wallet would deadlock with a
                # top-up holding the wallet and waiting for the balance row.
                await self._lock_wallet(conn, wallet_id)
            row = await conn.fetchrow(
                "update top_ups set status = 'completed', processor_charge_id = $2"
                " where id = $1 and status = 'pending'"
                " returning wallet_id, channel, amount, funding_source_id, session_id,"
                " idempotency_key",
                top_up_id,
                reference,
            )
            if row is None:
                stored = await conn.fetchval(
                    "select i.result from top_ups t join idempotency_keys i"
                    " on i.scope = 'top_up:' || t.wallet_id and i.key = t.idempotency_key"
                    " where t.id = $1",
                    top_up_id,
                )
                if stored is None:
                    raise FailedPrecondition("TOP_UP_FAILED", "the top-up did not complete")
                result: dict[str, Any] = stored
                return result
            counterparty = "points"
            if row["funding_source_id"] is not None:
                source = await conn.fetchrow(
                    "update funding_sources set first_top_up_at = coalesce(first_top_up_at, now())"
                    " where id = $1 returning brand, last4",
                    row["funding_source_id"],
                )
                counterparty = f"{source['brand']} ****{source['last4']}"
            result = await self._post_top_up(
                conn,
                top_up_id=top_up_id,
                wallet_id=row["wallet_id"],
                channel=row["channel"],
                amount=int(row["amount"]),
                counterparty=counterparty,
                session_id=row["session_id"],
                decision_id=decision_id,
            )
            await self._store_result(
                conn, f"top_up:{row['wallet_id']}", row["idempotency_key"], result
            )
            return result

    async def fail_top_up(self, top_up_id: uuid.UUID) -> None:
        """The outside party refused: free the reservation and the key."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "update top_ups set status = 'failed' where id = $1 and status = 'pending'"
                " returning wallet_id, idempotency_key",
                top_up_id,
            )
            if row is not None:
                await conn.execute(
                    "delete from idempotency_keys where scope = $1 and key = $2 and result is null",
                    f"top_up:{row['wallet_id']}",
                    row["idempotency_key"],
                )

    async def begin_points_top_up(
        self,
        *,
        wallet_id: uuid.UUID,
        amount: int,
        session_id: str,
        idempotency_key: str,
        request_hash: str,
    ) -> dict[str, Any] | PendingPointsTopUp:
        """Reserve a points top-up under the limits, or return the first result of a retry.

        Nothing is credited here: the points belong to the loyalty program until
        it has redeemed them (``finish_top_up``).
        """
        scope = f"top_up:{wallet_id}"
        async with self.pool.acquire() as conn, conn.transaction():
            first = await self._claim_key(conn, scope, idempotency_key, request_hash)
            if isinstance(first, dict):
                return first
            if first is IN_PROGRESS:
                row = await conn.fetchrow(
                    "select t.id, t.amount, w.payer_id from top_ups t"
                    " join wallets w on w.id = t.wallet_id"
                    " where t.wallet_id = $1 and t.idempotency_key = $2 and t.status = 'pending'"
                    " and t.channel = 'points'",
                    wallet_id,
                    idempotency_key,
                )
                if row is None:
                    raise FailedPrecondition("TOP_UP_IN_PROGRESS", "retry shortly")
                return PendingPointsTopUp(row["id"], row["payer_id"], int(row["amount"]))
            wallet = await self._lock_wallet(conn, wallet_id)
            _require_active(wallet["status"])
            await self._check_limits(conn, wallet_id, amount, new_source=False)
            top_up_id = uuid.uuid4()
            await conn.execute(
                "insert into top_ups (id, wallet_id, channel, amount, status, session_id,"
                " idempotency_key) values ($1, $2, 'points', $3, 'pending', $4, $5)",
                top_up_id,
                wallet_id,
                amount,
                session_id,
                idempotency_key,
            )
        return PendingPointsTopUp(top_up_id, wallet["payer_id"], amount)

    async def _post_top_up(
        self,
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
        entry_id, occurred_at, balance = await self._post(
            conn,
            kind="top_up",
            wallet_id=wallet_id,
            postings=[(wallet_id, amount), (CLEARING_BY_CHANNEL[channel], -amount)],
            counterparty=counterparty,
        )
        await conn.execute("update top_ups set entry_id = $2 where id = $1", top_up_id, entry_id)
        payer_id = await conn.fetchval("select payer_id from wallets where id = $1", wallet_id)
        await self._announce(
            conn,
            notice_kind=NOTICE_TOP_UP,
            outcome=OUTCOME_TOP_UP_COMPLETED,
            payer_id=payer_id,
            wallet_id=wallet_id,
            entry_id=entry_id,
            amount=amount,
            balance_after=balance,
            counterparty=counterparty,
            occurred_at=occurred_at,
            session_id=session_id,
            decision_id=decision_id,
        )
        return {
            "movement_id": str(entry_id),
            "amount": amount,
            "balance_after": balance,
            "channel": channel,
            "occurred_at": occurred_at.isoformat(),
        }

    # ---- one-time codes ------------------------------------------------------------

    async def issue_code(
        self,
        *,
        wallet_id: uuid.UUID,
        purpose: str,
        device_id: str,
        session_id: str,
        lifetime: timedelta,
        channel: str | None = None,
    ) -> tuple[str, datetime]:
        """A fresh code; the wallet's previous live code of the same purpose dies with it."""
        code = new_numeric_code()
        async with self.pool.acquire() as conn, conn.transaction():
            wallet = await self._lock_wallet(conn, wallet_id)
            _require_active(wallet["status"])
            await conn.execute(
                "update one_time_codes set status = 'voided'"
                " where wallet_id = $1 and purpose = $2 and status = 'active'",
                wallet_id,
                purpose,
            )
            expires_at = await conn.fetchval(
                "insert into one_time_codes (id, code_hash, purpose, wallet_id, device_id,"
                " session_id, channel, status, expires_at)"
                " values ($1, $2, $3, $4, $5, $6, $7, 'active', now() + $8::interval)"
                " returning expires_at",
                uuid.uuid4(),
                code_hash(code),
                purpose,
                wallet_id,
                device_id,
                session_id,
                channel,
                lifetime,
            )
        return code, expires_at

    async def code_holder(self, code: str, purpose: str) -> CodeHolder | None:
        """Who a live code belongs to, without spending it; None when dead or unknown."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "select c.wallet_id, w.payer_id, c.device_id, c.session_id, c.channel"
                " from one_time_codes c join wallets w on w.id = c.wallet_id"
                " where c.code_hash = $1 and c.purpose = $2 and c.status = 'active'"
                " and c.expires_at > now() and not exists (select 1 from revoked_sessions r"
                " where r.session_id = c.session_id)",
                code_hash(code),
                purpose,
            )
        if row is None or self.session_revoked(row["session_id"]):
            return None
        return CodeHolder(
            row["wallet_id"], row["payer_id"], row["device_id"], row["session_id"], row["channel"]
        )

    async def _spend_code(
        self, conn: asyncpg.Connection, code: str, purpose: str
    ) -> asyncpg.Record:
        # The wallet is locked before the code, in the same order as issue_code
        # (wallet, then its codes), so a capture racing a new code cannot deadlock.
        holder = await conn.fetchval(
            "select wallet_id from one_time_codes"
            " where code_hash = $1 and purpose = $2 and status = 'active'",
            code_hash(code),
            purpose,
        )
        if holder is None:
            raise FailedPrecondition("CODE_INVALID", "the code is unknown, used or expired")
        await self._lock_wallet(conn, holder)
        # One UPDATE decides: of many registers presenting the same code at once,
        # the first to take the row wins and the others find it used.
        row = await conn.fetchrow(
            "update one_time_codes set status = 'used'"
            " where code_hash = $1 and purpose = $2 and status = 'active' and expires_at > now()"
            " and not exists (select 1 from revoked_sessions r"
            " where r.session_id = one_time_codes.session_id)"
            " returning wallet_id, device_id, session_id, channel",
            code_hash(code),
            purpose,
        )
        # Checked under the wallet's lock, which void_sessions takes too: a capture
        # either commits before the session's codes are voided or is refused here
        # (the rollback leaves the code for void_sessions).
        if row is None or self.session_revoked(row["session_id"]):
            raise FailedPrecondition("CODE_INVALID", "the code is unknown, used or expired")
        return row

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
        scope = f"cash:{store.merchant_id}"
        async with self.pool.acquire() as conn, conn.transaction():
            first = await self._claim_key(conn, scope, idempotency_key, request_hash)
            if isinstance(first, dict):
                return first
            spent = await self._spend_code(conn, code, "cash_top_up")
            wallet_id = spent["wallet_id"]
            wallet = await self._lock_wallet(conn, wallet_id)
            _require_active(wallet["status"])
            await self._check_limits(conn, wallet_id, amount, new_source=False)
            top_up_id = uuid.uuid4()
            await conn.execute(
                "insert into top_ups (id, wallet_id, channel, amount, status, session_id,"
                " idempotency_key) values ($1, $2, $3, $4, 'completed', $5, $6)",
                top_up_id,
                wallet_id,
                spent["channel"],
                amount,
                spent["session_id"],
                f"cash:{store.merchant_id}:{idempotency_key}",
            )
            result = await self._post_top_up(
                conn,
                top_up_id=top_up_id,
                wallet_id=wallet_id,
                channel=spent["channel"],
                amount=amount,
                counterparty=store.name,
                session_id=spent["session_id"],
                decision_id=decision_id,
            )
            await self._store_result(conn, scope, idempotency_key, result)
            return result

    # ---- payments ------------------------------------------------------------------

    async def capture_by_code(
        self,
        *,
        code: str,
        amount: int,
        store: StoreRow,
        merchant_name: str,
        idempotency_key: str,
        request_hash: str,
        decision_id: str = "",
    ) -> dict[str, Any]:
        scope = f"capture:{store.merchant_id}"
        async with self.pool.acquire() as conn, conn.transaction():
            first = await self._claim_key(conn, scope, idempotency_key, request_hash)
            if isinstance(first, dict):
                return first
            spent = await self._spend_code(conn, code, "payment")
            return await self._capture(
                conn,
                scope=scope,
                idempotency_key=idempotency_key,
                wallet_id=spent["wallet_id"],
                amount=amount,
                store=store,
                merchant_name=merchant_name,
                session_id=spent["session_id"],
                decision_id=decision_id,
                authorization_id=None,
            )

    async def authorize(
        self,
        *,
        code: str,
        amount: int,
        store: StoreRow,
        hold: timedelta,
        idempotency_key: str,
        request_hash: str,
    ) -> dict[str, Any]:
        scope = f"authorize:{store.merchant_id}"
        async with self.pool.acquire() as conn, conn.transaction():
            first = await self._claim_key(conn, scope, idempotency_key, request_hash)
            if isinstance(first, dict):
                return first
            spent = await self._spend_code(conn, code, "payment")
            wallet_id = spent["wallet_id"]
            wallet = await self._lock_wallet(conn, wallet_id)
            _require_active(wallet["status"])
            held = await self._held(conn, wallet_id)
            if amount > int(wallet["balance"]) - held:
                raise FailedPrecondition("INSUFFICIENT_BALANCE", "the balance is too low")
            row = await conn.fetchrow(
                "insert into authorizations (id, wallet_id, merchant_id, store_id, amount,"
                " device_id, session_id, status, hold_expires_at)"
                " values ($1, $2, $3, $4, $5, $6, $7, 'held', now() + $8::interval)"
                " returning id, created_at, hold_expires_at",
                uuid.uuid4(),
                wallet_id,
                store.merchant_id,
                store.id,
                amount,
                spent["device_id"],
                spent["session_id"],
                hold,
            )
            result = {
                "movement_id": "",
                "authorization_id": str(row["id"]),
                "amount": amount,
                "merchant_id": str(store.merchant_id),
                "store_id": str(store.id),
                "occurred_at": row["created_at"].isoformat(),
                "hold_expires_at": row["hold_expires_at"].isoformat(),
                "refunded": 0,
            }
            await self._store_result(conn, scope, idempotency_key, result)
            return result

    async def authorization_holder(
        self, authorization_id: uuid.UUID, merchant_id: uuid.UUID
    ) -> CodeHolder:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "select a.wallet_id, w.payer_id, a.device_id, a.session_id from authorizations a"
                " join wallets w on w.id = a.wallet_id where a.id = $1 and a.merchant_id = $2",
                authorization_id,
                merchant_id,
            )
        if row is None:
            raise NotFound("AUTHORIZATION_NOT_FOUND", "no such authorization")
        return CodeHolder(
            row["wallet_id"], row["payer_id"], row["device_id"], row["session_id"], None
        )

    async def capture_authorization(
        self,
        *,
        authorization_id: uuid.UUID,
        amount: int,
        store: StoreRow,
        merchant_name: str,
        idempotency_key: str,
        request_hash: str,
    ) -> dict[str, Any]:
        scope = f"capture:{store.merchant_id}"
        async with self.pool.acquire() as conn, conn.transaction():
            first = await self._claim_key(conn, scope, idempotency_key, request_hash)
            if isinstance(first, dict):
                return first
            invalid_hold = FailedPrecondition(
                "AUTHORIZATION_INVALID", "the authorization is unknown, used or expired"
            )
            # The wallet is locked before the hold, in the same order as void_sessions
            # and the code paths (wallet, then its codes and holds), so none can deadlock.
            holder = await conn.fetchval(
                "select wallet_id from authorizations where id = $1 and merchant_id = $2",
                authorization_id,
                store.merchant_id,
            )
            if holder is None:
                raise invalid_hold
            await self._lock_wallet(conn, holder)
            hold = await conn.fetchrow(
                "update authorizations set status = 'captured'"
                " where id = $1 and merchant_id = $2 and status = 'held'"
                " and hold_expires_at > now() and not exists (select 1 from revoked_sessions r"
                " where r.session_id = authorizations.session_id)"
                " returning wallet_id, amount, session_id",
                authorization_id,
                store.merchant_id,
            )
            # A hold made in a revoked session is money the payer no longer vouches for.
            if hold is None or self.session_revoked(hold["session_id"]):
                raise invalid_hold
            if amount > int(hold["amount"]):
                raise invalid("amount.amount_minor", "must not exceed the authorized amount")
            return await self._capture(
                conn,
                scope=scope,
                idempotency_key=idempotency_key,
                wallet_id=hold["wallet_id"],
                amount=amount,
                store=store,
                merchant_name=merchant_name,
                session_id=hold["session_id"],
                decision_id="",
                authorization_id=authorization_id,
            )

    async def void_sessions(self, session_ids: Sequence[str]) -> tuple[int, int, int]:
        """Void the live codes, release the holds and forget the payout accounts made
        in ``session_ids`` (revoked sessions); returns how many of each. Idempotent:
        every replica follows the revocations and may void the same sessions.

        Each wallet concerned is locked first, as a capture locks it before spending
        a code or a hold, so a capture racing this either committed before (and its
        code or hold is no longer live) or finds the code or hold voided.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            # Recorded for good, before anything is voided: identity announces a
            # revocation only for a while, and what the session made must stay
            # refused after this replica restarts and forgets it. Sorted, so two
            # replicas recording overlapping batches wait on each other in one order.
            await conn.execute(
                "insert into revoked_sessions (session_id)"
                " select s from unnest($1::text[]) as s order by s on conflict do nothing",
                sorted(set(session_ids)),
            )
            wallets = await conn.fetchval(
                "select coalesce(array_agg(distinct wallet_id), '{}') from ("
                " select wallet_id from one_time_codes"
                "  where session_id = any($1::text[]) and status = 'active'"
                " union all select wallet_id from authorizations"
                "  where session_id = any($1::text[]) and status = 'held'"
                " union all select wallet_id from payout_accounts"
                "  where session_id = any($1::text[])) as made",
                list(session_ids),
            )
            if not wallets:
                return 0, 0, 0
            await conn.execute(
                "select 1 from wallets w join ledger_accounts a on a.id = w.id"
                " where w.id = any($1::uuid[]) order by w.id for update of w, a",
                wallets,
            )
            codes = await conn.fetchval(
                "with voided as (update one_time_codes set status = 'voided'"
                " where session_id = any($1::text[]) and status = 'active' returning 1)"
                " select count(*) from voided",
                list(session_ids),
            )
            holds = await conn.fetchval(
                "with released as (update authorizations set status = 'voided'"
                " where session_id = any($1::text[]) and status = 'held' returning 1)"
                " select count(*) from released",
                list(session_ids),
            )
            payouts = await conn.fetchval(
                "with forgotten as (delete from payout_accounts"
                " where session_id = any($1::text[]) returning 1)"
                " select count(*) from forgotten",
                list(session_ids),
            )
        return int(codes), int(holds), int(payouts)

    async def void_authorization(self, authorization_id: uuid.UUID, merchant_id: uuid.UUID) -> None:
        async with self.pool.acquire() as conn:
            status = await conn.fetchval(
                "update authorizations set status = case when status = 'held' then 'voided'"
                " else status end where id = $1 and merchant_id = $2 returning status",
                authorization_id,
                merchant_id,
            )
        if status is None:
            raise NotFound("AUTHORIZATION_NOT_FOUND", "no such authorization")
        if status == "captured":
            raise FailedPrecondition("AUTHORIZATION_CAPTURED", "the authorization was captured")

    async def _held(self, conn: asyncpg.Connection, wallet_id: uuid.UUID) -> int:
        held = await conn.fetchval(
            "select coalesce(sum(amount), 0) from authorizations"
            " where wallet_id = $1 and status = 'held' and hold_expires_at > now()",
            wallet_id,
        )
        return int(held)

    async def _capture(
        self,
        conn: asyncpg.Connection,
        *,
        scope: str,
        idempotency_key: str,
        wallet_id: uuid.UUID,
        amount: int,
        store: StoreRow,
        merchant_name: str,
        session_id: str,
        decision_id: str,
        authorization_id: uuid.UUID | None,
    ) -> dict[str, Any]:
        # Exclusive, like every other movement of this wallet: a shared lock let a
        # capture read the balance before another capture of a hold committed and
        # the held sum after it, and spend money held for a third merchant.
        wallet = await self._lock_wallet(conn, wallet_id)
        _require_active(wallet["status"])
        # An authorization being captured has already left the held sum.
        available = int(wallet["balance"]) - await self._held(conn, wallet_id)
        if amount > available:
            raise FailedPrecondition("INSUFFICIENT_BALANCE", "the balance is too low")
        counterparty = merchant_name
        try:
            # The merchant's side is appended, never updated in place: many stores of
            # one chain capture at once without queueing on a merchant balance row.
            entry_id, occurred_at, balance = await self._post(
                conn,
                kind="payment",
                wallet_id=wallet_id,
                postings=[(wallet_id, -amount), (store.merchant_id, amount)],
                counterparty=counterparty,
            )
        except asyncpg.CheckViolationError:
            # Another payment took the balance between the check and the posting.
            raise FailedPrecondition("INSUFFICIENT_BALANCE", "the balance is too low") from None
        await conn.execute(
            "insert into payments (entry_id, wallet_id, merchant_id, store_id, authorization_id,"
            " amount) values ($1, $2, $3, $4, $5, $6)",
            entry_id,
            wallet_id,
            store.merchant_id,
            store.id,
            authorization_id,
            amount,
        )
        await self._announce(
            conn,
            notice_kind=NOTICE_PAYMENT,
            outcome=OUTCOME_PAYMENT_CAPTURED,
            payer_id=wallet["payer_id"],
            wallet_id=wallet_id,
            entry_id=entry_id,
            amount=amount,
            balance_after=balance,
            counterparty=counterparty,
            occurred_at=occurred_at,
            session_id=session_id,
            decision_id=decision_id,
        )
        result = {
            "movement_id": str(entry_id),
            "authorization_id": "" if authorization_id is None else str(authorization_id),
            "amount": amount,
            "merchant_id": str(store.merchant_id),
            "store_id": str(store.id),
            "occurred_at": occurred_at.isoformat(),
            "hold_expires_at": "",
            "refunded": 0,
        }
        await self._store_result(conn, scope, idempotency_key, result)
        return result

    async def refund(
        self,
        *,
        payment_id: uuid.UUID,
        amount: int,
        merchant_id: uuid.UUID | None,
        idempotency_key: str,
        request_hash: str,
    ) -> dict[str, Any]:
        """Refund part or all of a payment; the total never exceeds what was captured.

        ``merchant_id`` limits a store system to its own payments; operators pass None.
        """
        scope = f"refund:{payment_id}"
        async with self.pool.acquire() as conn, conn.transaction():
            first = await self._claim_key(conn, scope, idempotency_key, request_hash)
            if isinstance(first, dict):
                return first
            payment = await conn.fetchrow(
                "select p.wallet_id, p.merchant_id, p.store_id, p.authorization_id, p.amount,"
                " p.refunded, p.created_at, m.name as merchant_name, w.payer_id"
                " from payments p join merchants m on m.id = p.merchant_id"
                " join wallets w on w.id = p.wallet_id where p.entry_id = $1 for update of p",
                payment_id,
            )
            if payment is None or (
                merchant_id is not None and payment["merchant_id"] != merchant_id
            ):
                raise NotFound("PAYMENT_NOT_FOUND", "no such payment")
            left = int(payment["amount"]) - int(payment["refunded"])
            if amount > left:
                raise FailedPrecondition(
                    "REFUND_EXCEEDS_PAYMENT",
                    "the refund exceeds what is left of the payment",
                    metadata={"refundable_minor": str(left)},
                )
            wallet_id = payment["wallet_id"]
            entry_id, occurred_at, balance = await self._post(
                conn,
                kind="refund",
                wallet_id=wallet_id,
                postings=[(payment["merchant_id"], -amount), (wallet_id, amount)],
                counterparty=payment["merchant_name"],
                related=payment_id,
            )
            refunded = await conn.fetchval(
                "update payments set refunded = refunded + $2 where entry_id = $1"
                " returning refunded",
                payment_id,
                amount,
            )
            await self._announce(
                conn,
                notice_kind=NOTICE_REFUND,
                outcome=OUTCOME_PAYMENT_REFUNDED,
                payer_id=payment["payer_id"],
                wallet_id=wallet_id,
                entry_id=entry_id,
                amount=amount,
                balance_after=balance,
                counterparty=payment["merchant_name"],
                occurred_at=occurred_at,
            )
            result = {
                "movement_id": str(entry_id),
                "payment": {
                    "movement_id": str(payment_id),
                    "authorization_id": str(payment["authorization_id"] or ""),
                    "amount": int(payment["amount"]),
                    "merchant_id": str(payment["merchant_id"]),
                    "store_id": str(payment["store_id"]),
                    "occurred_at": payment["created_at"].isoformat(),
                    "hold_expires_at": "",
                    "refunded": int(refunded),
                },
            }
            await self._store_result(conn, scope, idempotency_key, result)
            return result

    # ---- merchants -----------------------------------------------------------------

    async def register_merchant(self, name: str, category: str) -> tuple[Merchant, str]:
        key = secrets.token_urlsafe(32)
        merchant_id = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
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
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "select id, name, category from merchants where key_hash = $1", code_hash(key)
            )
        return None if row is None else Merchant(row["id"], row["name"], row["category"])

    async def register_store(self, merchant_id: uuid.UUID, store_code: str, name: str) -> uuid.UUID:
        async with self.pool.acquire() as conn:
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
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "select id, merchant_id, name from stores where id = $1 and merchant_id = $2",
                store_id,
                merchant_id,
            )
        if row is None:
            raise NotFound("STORE_NOT_FOUND", "no such store for this merchant")
        return StoreRow(row["id"], row["merchant_id"], row["name"])

    # ---- statements and reconciliation ---------------------------------------------

    async def statement(
        self, wallet_id: uuid.UUID, *, limit: int, after: int | None
    ) -> tuple[list[StatementLine], int | None]:
        """Newest first; paged by the wallet posting's id (commit order per wallet)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
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
            self.pool.acquire() as conn,
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

    # ---- compensation --------------------------------------------------------------

    async def movements_for_compensation(
        self, movement_ids: Sequence[uuid.UUID]
    ) -> list[UnauthorizedMovement]:
        """Our own record of the movements risk named: kind, what is still owed, the card."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "select e.id, e.kind, e.wallet_id,"
                " coalesce(p.amount - p.refunded, t.amount, 0) as amount,"
                " coalesce(t.channel = 'card', false) as card_charge"
                " from journal_entries e"
                " left join payments p on p.entry_id = e.id"
                " left join top_ups t on t.entry_id = e.id"
                " where e.id = any($1::uuid[]) and e.kind in ('top_up', 'payment')",
                list(movement_ids),
            )
        return [
            UnauthorizedMovement(
                movement_id=str(row["id"]),
                wallet_id=str(row["wallet_id"]),
                kind=row["kind"],
                amount=int(row["amount"]),
                card_charge=bool(row["card_charge"]),
            )
            for row in rows
        ]

    async def plan_compensation(
        self, case_id: uuid.UUID, movements: Sequence[UnauthorizedMovement], reason: str
    ) -> None:
        """Record one line per movement owed; a movement already settled is not added twice."""
        async with self.pool.acquire() as conn, conn.transaction():
            for movement in movements:
                method = method_for(movement)
                if method is None or movement.amount <= 0:
                    continue
                await conn.execute(
                    "insert into compensation_lines (movement_id, case_id, wallet_id, amount,"
                    " method, status, reason) values ($1, $2, $3, $4, $5, 'pending', $6)"
                    " on conflict (movement_id) do nothing",
                    uuid.UUID(movement.movement_id),
                    case_id,
                    uuid.UUID(movement.wallet_id),
                    movement.amount,
                    method,
                    reason,
                )

    async def compensation_lines(self, case_id: uuid.UUID) -> list[CompensationLineRow]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "select c.movement_id, c.wallet_id, c.amount, c.method, c.status,"
                " c.compensation_entry_id, t.processor_charge_id"
                " from compensation_lines c left join top_ups t on t.entry_id = c.movement_id"
                " where c.case_id = $1"
                " order by c.method = 'card_refund', c.movement_id",
                case_id,
            )
        return [
            CompensationLineRow(
                movement_id=row["movement_id"],
                wallet_id=row["wallet_id"],
                amount=int(row["amount"]),
                method=row["method"],
                status=row["status"],
                compensation_entry_id=row["compensation_entry_id"],
                processor_charge_id=row["processor_charge_id"],
            )
            for row in rows
        ]

    async def settle_line(self, case_id: uuid.UUID, movement_id: uuid.UUID) -> bool:
        """Post one pending line; False when an earlier run already paid it."""
        async with self.pool.acquire() as conn, conn.transaction():
            line = await conn.fetchrow(
                "select wallet_id, amount, method from compensation_lines"
                " where movement_id = $1 and case_id = $2 and status = 'pending' for update",
                movement_id,
                case_id,
            )
            if line is None:
                return False
            wallet_id, amount = line["wallet_id"], int(line["amount"])
            wallet = await self._lock_wallet(conn, wallet_id)
            if line["method"] == WALLET_CREDIT:
                kind = "compensation"
                postings = [(wallet_id, amount), (COMPENSATION_EXPENSE, -amount)]
            else:
                kind = "top_up_reversal"
                from_wallet, from_expense = split_reversal(amount, int(wallet["balance"]))
                postings = [
                    (wallet_id, -from_wallet),
                    (COMPENSATION_EXPENSE, -from_expense),
                    (CARD_CLEARING, amount),
                ]
            entry_id, occurred_at, balance = await self._post(
                conn,
                kind=kind,
                wallet_id=wallet_id,
                postings=postings,
                counterparty="compensation",
                related=movement_id,
                case_id=case_id,
            )
            await conn.execute(
                "update compensation_lines set status = 'paid', compensation_entry_id = $2"
                " where movement_id = $1",
                movement_id,
                entry_id,
            )
            await self._announce(
                conn,
                notice_kind=NOTICE_COMPENSATION,
                outcome=None,
                payer_id=wallet["payer_id"],
                wallet_id=wallet_id,
                entry_id=entry_id,
                amount=amount,
                balance_after=balance,
                counterparty="compensation" if line["method"] == WALLET_CREDIT else CARD_REFUND,
                occurred_at=occurred_at,
            )
            return True

    # ---- wind-down -----------------------------------------------------------------

    async def mark_balance_holders_notified(self, deadline: str, *, batch: int = 500) -> int:
        """Tell every positive-balance holder once, in short batches."""
        notified = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
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
                    await enqueue(
                        conn,
                        topic=NOTICE_TOPIC,
                        idempotency_key=f"wind_down:{row['id']}",
                        payload={
                            "payer_id": row["payer_id"],
                            "kind": NOTICE_WIND_DOWN,
                            "amount": int(row["balance"]),
                            "balance_after": int(row["balance"]),
                            "detail": f"claim your balance by {deadline}"[:200],
                        },
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
        """Set where payouts go, until ``session_id`` is revoked (``void_sessions``);
        the holder is told of every new destination."""
        async with self.pool.acquire() as conn, conn.transaction():
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
                payer_id = await conn.fetchval(
                    "select payer_id from wallets where id = $1", wallet_id
                )
                # A session thief's first move is to point the payout at their own
                # account; the person hears of it at the registered address.
                await enqueue(
                    conn,
                    topic=NOTICE_TOPIC,
                    idempotency_key=f"payout_account:{wallet_id}:{uuid.uuid4()}",
                    payload={
                        "payer_id": payer_id,
                        "kind": NOTICE_WALLET_STATUS,
                        "detail": (
                            f"payouts now go to bank {bank_code} branch {branch_code}"
                            f" account ****{account_number[-3:]}"
                        ),
                    },
                )

    async def claim_payout(
        self, wallet_id: uuid.UUID, *, idempotency_key: str, request_hash: str
    ) -> dict[str, Any]:
        """Pay out the whole balance: one entry now, the bank transfer through the outbox."""
        scope = f"payout:{wallet_id}"
        async with self.pool.acquire() as conn, conn.transaction():
            first = await self._claim_key(conn, scope, idempotency_key, request_hash)
            if isinstance(first, dict):
                return first
            wallet = await self._lock_wallet(conn, wallet_id)
            if wallet["status"] == "frozen":
                raise FailedPrecondition("WALLET_FROZEN", "the wallet is frozen")
            account = await conn.fetchrow(
                "select bank_code, branch_code, account_number, holder_name, session_id"
                " from payout_accounts p where wallet_id = $1 and not exists"
                " (select 1 from revoked_sessions r where r.session_id = p.session_id)",
                wallet_id,
            )
            # Set in a session since revoked: void_sessions is about to forget it.
            if account is None or self.session_revoked(account["session_id"]):
                raise FailedPrecondition(
                    "PAYOUT_ACCOUNT_REQUIRED", "register a payout bank account first"
                )
            amount = int(wallet["balance"]) - await self._held(conn, wallet_id)
            if amount <= 0:
                raise FailedPrecondition("NOTHING_TO_PAY_OUT", "the balance is zero")
            entry_id, occurred_at, balance = await self._post(
                conn,
                kind="payout",
                wallet_id=wallet_id,
                postings=[(wallet_id, -amount), (PAYOUT_CLEARING, amount)],
                counterparty=f"bank {account['bank_code']}-{account['branch_code']}",
            )
            await conn.execute(
                "insert into payouts (entry_id, wallet_id, amount, bank_code, branch_code,"
                " account_number, holder_name) values ($1, $2, $3, $4, $5, $6, $7)",
                entry_id,
                wallet_id,
                amount,
                account["bank_code"],
                account["branch_code"],
                account["account_number"],
                account["holder_name"],
            )
            await enqueue(
                conn,
                topic=PAYOUT_TOPIC,
                idempotency_key=f"payout:{entry_id}",
                payload={"payout_id": str(entry_id), "amount": amount, **dict(account)},
            )
            await self._announce(
                conn,
                notice_kind=NOTICE_PAYOUT,
                outcome=None,
                payer_id=wallet["payer_id"],
                wallet_id=wallet_id,
                entry_id=entry_id,
                amount=amount,
                balance_after=balance,
                counterparty="bank transfer",
                occurred_at=occurred_at,
            )
            result = {"movement_id": str(entry_id), "amount": amount}
            await self._store_result(conn, scope, idempotency_key, result)
            return result

    async def unclaimed(
        self, *, limit: int, after: uuid.UUID | None
    ) -> tuple[list[UnclaimedRow], int, int, uuid.UUID | None]:
        """(page, total, wallet count, next cursor) of balances not yet paid out."""
        async with (
            self.pool.acquire() as conn,
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


def _never_revoked(session_id: str) -> bool:
    return False


def _require_active(status: str) -> None:
    if status == "frozen":
        raise FailedPrecondition("WALLET_FROZEN", "the wallet is frozen")
    if status == "closed":
        raise FailedPrecondition("WALLET_CLOSED", "the wallet is closed")


_WALLET_SELECT = (
    "select w.id, w.payer_id, w.status, w.frozen_reason, a.balance, w.created_at"
    " from wallets w join ledger_accounts a on a.id = w.id"
)

_SOURCE_SELECT = (
    "select id, wallet_id, processor_token, brand, last4, created_at,"
    " first_top_up_at is null as new_source from funding_sources"
)

# Every movement takes the wallet row exclusively, so checks of its limits,
# balance and holds run one movement at a time; it is the payer's own row, so
# stores of one merchant do not queue on each other. The balance row is locked
# too: a statement that waited for a lock would otherwise return the balance as
# it was before the movement it waited for.
_LOCK_WALLET = (
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
