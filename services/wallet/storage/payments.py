"""Store payments: authorizations (holds), captures by code or hold, voids. SQL only.

A capture is one short transaction of two statements: the first locks the wallet
and spends the code or hold, the second checks the balance left beside the holds,
posts the entry, records the payment, stores the answer under the merchant's
idempotency key and enqueues the payer's notice and risk's outcome. The
merchant's side of the entry is appended, never updated in place, so many stores
of one chain capture at once without queueing on a merchant balance row.

The key is stored with the answer at the end, not claimed first: a request with
the same key that finished meanwhile spent the code or hold (this one finds it
gone) or stored the key (this one's insert is refused), and either way this one
rolls back and answers with the first request's result.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.runtime.errors import FailedPrecondition, NotFound
from services.runtime.outbox import NOTIFY_CHANNEL
from services.wallet.clients.outbox import (
    NOTICE_PAYMENT,
    OUTCOME_PAYMENT_CAPTURED,
    announcement,
    outbox_rows,
)
from services.wallet.domain.codes import code_hash
from services.wallet.domain.merchants import StoreRow
from services.wallet.domain.payments import (
    CapturedHold,
    CodeHolder,
    Presented,
    authorization_invalid,
    authorize_scope,
    capture_scope,
    code_invalid,
    require_within_hold,
)
from services.wallet.domain.wallets import LockedWallet, require_active, require_available
from services.wallet.storage import codes, idempotent, wallets

# Before risk is asked, in one statement: the first answer under the key, and
# who the code belongs to (only live codes match).
_PRESENTED = f"""
    select k.request_hash, k.result, c.id, c.wallet_id, w.payer_id, c.device_id,
        c.session_id, c.channel
    from (select) as request
    left join idempotency_keys k on k.scope = $1 and k.key = $2
    left join (one_time_codes c join wallets w on w.id = c.wallet_id)
        on c.code_hash = $3 and c.purpose = 'payment' and {codes.LIVE}
"""  # noqa: S608 - codes.LIVE is a constant
# The wallet's lock first, as every path that spends or voids its codes takes it,
# then the code risk assessed, if it is still live.
_SPEND_CODE = f"""
    with wallet as (
        select w.status, w.payer_id, a.balance
        from wallets w join ledger_accounts a on a.id = w.id
        where w.id = $1 for update of w, a
    ), spent as (
        update one_time_codes c set status = 'used'
        from wallet
        where c.id = $2 and c.wallet_id = $1 and c.purpose = 'payment' and {codes.LIVE}
        returning c.session_id
    )
    select wallet.status, wallet.payer_id, wallet.balance, now() as now, spent.session_id
    from wallet left join spent on true
"""  # noqa: S608 - codes.LIVE is a constant
# Runs after the lock is held, so its snapshot sees every hold committed before
# (a hold is made under the same lock). Nothing is written unless the balance
# less the holds covers the amount. The postings' trigger moves the wallet's
# balance and reports it; the deferred trigger proves the entry balanced at commit.
_POST = """
    with held as (
        select coalesce(sum(amount), 0) as amount from authorizations
        where wallet_id = $1 and status = 'held' and hold_expires_at > now()
    ), entry as (
        insert into journal_entries (id, kind, wallet_id, counterparty)
        select $2, 'payment', $1, $3 from held
        where $4::bigint - held.amount >= $5::bigint
        returning id, created_at
    ), lines as (
        insert into postings (entry_id, account_id, amount)
        select entry.id, line.account, line.amount
        from entry, unnest(array[$1, $6]::uuid[], array[-$5::bigint, $5::bigint])
            as line(account, amount)
        returning account_id, balance_after
    ), paid as (
        insert into payments (entry_id, wallet_id, merchant_id, store_id, authorization_id,
            amount)
        select entry.id, $1, $6, $7, $8, $5 from entry
    ), answered as (
        insert into idempotency_keys (scope, key, request_hash, result)
        select $9, $10, $11, $12::jsonb from entry
    ), queued as (
        insert into outbox (topic, idempotency_key, payload)
        select message.topic, message.key, message.payload::jsonb
        from entry, unnest($13::text[], $14::text[], $15::text[])
            as message(topic, key, payload)
        on conflict (idempotency_key) do nothing
        returning id
    ), announced as (
        -- Wakes the relays at commit, as outbox.enqueue does; counted below so it runs.
        select pg_notify($16, '') from queued limit 1
    )
    select entry.created_at,
        (select balance_after from lines where account_id = $1) as balance_after,
        (select count(*) from announced) as announced
    from entry
"""


def insufficient_balance() -> FailedPrecondition:
    return FailedPrecondition("INSUFFICIENT_BALANCE", "the balance is too low")


@dataclass(frozen=True)
class Capture:
    """A capture as the register asked for it, under its key."""

    scope: str
    idempotency_key: str
    request_hash: str
    amount: int
    store: StoreRow
    merchant_name: str


class Payments:
    """``session_revoked`` is this replica's copy of identity's revocations."""

    def __init__(self, pool: asyncpg.Pool, session_revoked: Callable[[str], bool]) -> None:
        self._pool = pool
        self._session_revoked = session_revoked

    async def replay(self, scope: str, key: str, request_hash: str) -> dict[str, Any] | None:
        return await idempotent.replay(self._pool, scope, key, request_hash)

    async def presented(self, scope: str, key: str, request_hash: str, code: str) -> Presented:
        """The first answer under the key (a retry), and who the code belongs to."""
        row = await self._pool.fetchrow(_PRESENTED, scope, key, code_hash(code))
        if row is not None and row["result"] is not None:
            if row["request_hash"] != request_hash:
                raise idempotent.key_reused()
            return Presented(row["result"], None)
        return Presented(None, codes.holder_of(row, self._session_revoked))

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
        async with idempotent.idempotent(
            self._pool, authorize_scope(store.merchant_id), idempotency_key, request_hash
        ) as claim:
            if claim.replayed is not None:
                return claim.replayed
            conn = claim.conn
            spent = await codes.spend(conn, code, "payment", self._session_revoked)
            wallet = await wallets.lock(conn, spent.wallet_id)
            require_active(wallet.status)
            require_available(amount, wallet.balance, await wallets.held(conn, spent.wallet_id))
            row = await conn.fetchrow(
                "insert into authorizations (id, wallet_id, merchant_id, store_id, amount,"
                " device_id, session_id, status, hold_expires_at)"
                " values ($1, $2, $3, $4, $5, $6, $7, 'held', now() + $8::interval)"
                " returning id, created_at, hold_expires_at",
                uuid.uuid4(),
                spent.wallet_id,
                store.merchant_id,
                store.id,
                amount,
                spent.device_id,
                spent.session_id,
                hold,
            )
            return await claim.finish(
                {
                    "movement_id": "",
                    "authorization_id": str(row["id"]),
                    "amount": amount,
                    "merchant_id": str(store.merchant_id),
                    "store_id": str(store.id),
                    "occurred_at": row["created_at"].isoformat(),
                    "hold_expires_at": row["hold_expires_at"].isoformat(),
                    "refunded": 0,
                }
            )

    async def capture_by_code(
        self,
        *,
        holder: CodeHolder,
        amount: int,
        store: StoreRow,
        merchant_name: str,
        idempotency_key: str,
        request_hash: str,
        decision_id: str = "",
    ) -> dict[str, Any]:
        """Spend the code risk assessed (``holder``) and post the payment."""
        capture = Capture(
            capture_scope(store.merchant_id),
            idempotency_key,
            request_hash,
            amount,
            store,
            merchant_name,
        )
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_SPEND_CODE, holder.wallet_id, holder.code_id)
                # Checked under the wallet's lock, which voiding a session takes too: a
                # capture either commits before the session's codes are voided or is
                # refused here (the rollback leaves the code for the voiding).
                if (
                    row is None
                    or row["session_id"] is None
                    or self._session_revoked(row["session_id"])
                ):
                    raise code_invalid()
                return await _post(
                    conn,
                    capture,
                    wallet_id=holder.wallet_id,
                    wallet=LockedWallet(row["status"], row["payer_id"], int(row["balance"])),
                    now=row["now"],
                    session_id=row["session_id"],
                    decision_id=decision_id,
                    authorization_id=None,
                )
        except (asyncpg.UniqueViolationError, FailedPrecondition) as error:
            return await self._first_answer(capture, error, gone="CODE_INVALID")

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
        capture = Capture(
            capture_scope(store.merchant_id),
            idempotency_key,
            request_hash,
            amount,
            store,
            merchant_name,
        )
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                hold, wallet, now = await self._take_hold(conn, authorization_id, store.merchant_id)
                require_within_hold(amount, hold.amount)
                return await _post(
                    conn,
                    capture,
                    wallet_id=hold.wallet_id,
                    wallet=wallet,
                    now=now,
                    session_id=hold.session_id,
                    decision_id="",
                    authorization_id=authorization_id,
                )
        except (asyncpg.UniqueViolationError, FailedPrecondition) as error:
            return await self._first_answer(capture, error, gone="AUTHORIZATION_INVALID")

    async def _first_answer(
        self, capture: Capture, error: Exception, *, gone: str
    ) -> dict[str, Any]:
        """The answer of a request with the same key that finished while this one ran:
        it spent the code or hold (``gone``) or stored the key first. Else ``error``."""
        raced = (
            isinstance(error, asyncpg.UniqueViolationError)
            and error.constraint_name == "idempotency_keys_pkey"
        ) or (isinstance(error, FailedPrecondition) and error.reason == gone)
        if not raced:
            raise error
        replayed = await idempotent.replay(
            self._pool, capture.scope, capture.idempotency_key, capture.request_hash
        )
        if replayed is None:
            raise error
        return replayed

    async def _take_hold(
        self, conn: asyncpg.Connection, authorization_id: uuid.UUID, merchant_id: uuid.UUID
    ) -> tuple[CapturedHold, LockedWallet, datetime]:
        # The wallet is locked before the hold, in the same order as voiding a
        # session and the code paths (wallet, then its codes and holds), so none
        # can deadlock.
        holder = await conn.fetchval(
            "select wallet_id from authorizations where id = $1 and merchant_id = $2",
            authorization_id,
            merchant_id,
        )
        if holder is None:
            raise authorization_invalid()
        wallet = await wallets.lock(conn, holder)
        hold = await conn.fetchrow(
            "update authorizations set status = 'captured'"
            " where id = $1 and merchant_id = $2 and status = 'held'"
            " and hold_expires_at > now() and not exists (select 1 from revoked_sessions r"
            " where r.session_id = authorizations.session_id)"
            " returning wallet_id, amount, session_id, now() as now",
            authorization_id,
            merchant_id,
        )
        # A hold made in a revoked session is money the payer no longer vouches for.
        if hold is None or self._session_revoked(hold["session_id"]):
            raise authorization_invalid()
        taken = CapturedHold(hold["wallet_id"], int(hold["amount"]), hold["session_id"])
        return taken, wallet, hold["now"]

    async def void_authorization(self, authorization_id: uuid.UUID, merchant_id: uuid.UUID) -> None:
        status = await self._pool.fetchval(
            "update authorizations set status = case when status = 'held' then 'voided'"
            " else status end where id = $1 and merchant_id = $2 returning status",
            authorization_id,
            merchant_id,
        )
        if status is None:
            raise NotFound("AUTHORIZATION_NOT_FOUND", "no such authorization")
        if status == "captured":
            raise FailedPrecondition("AUTHORIZATION_CAPTURED", "the authorization was captured")


async def _post(
    conn: asyncpg.Connection,
    capture: Capture,
    *,
    wallet_id: uuid.UUID,
    wallet: LockedWallet,
    now: datetime,
    session_id: str,
    decision_id: str,
    authorization_id: uuid.UUID | None,
) -> dict[str, Any]:
    """Post a payment from a wallet this transaction has locked; its answer."""
    require_active(wallet.status)
    # The wallet is locked, so its balance after the posting and the entry's time
    # (the transaction's) are known before the statement that writes them.
    entry_id, balance_after = uuid.uuid4(), wallet.balance - capture.amount
    if balance_after < 0:
        raise insufficient_balance()
    result = {
        "movement_id": str(entry_id),
        "authorization_id": "" if authorization_id is None else str(authorization_id),
        "amount": capture.amount,
        "merchant_id": str(capture.store.merchant_id),
        "store_id": str(capture.store.id),
        "occurred_at": now.isoformat(),
        "hold_expires_at": "",
        "refunded": 0,
    }
    topics, keys, payloads = outbox_rows(
        announcement(
            notice_kind=NOTICE_PAYMENT,
            outcome=OUTCOME_PAYMENT_CAPTURED,
            payer_id=wallet.payer_id,
            wallet_id=wallet_id,
            entry_id=entry_id,
            amount=capture.amount,
            balance_after=balance_after,
            counterparty=capture.merchant_name,
            occurred_at=now,
            session_id=session_id,
            decision_id=decision_id,
        )
    )
    try:
        posted = await conn.fetchrow(
            _POST,
            wallet_id,
            entry_id,
            capture.merchant_name,
            wallet.balance,
            capture.amount,
            capture.store.merchant_id,
            capture.store.id,
            authorization_id,
            capture.scope,
            capture.idempotency_key,
            capture.request_hash,
            result,
            topics,
            keys,
            payloads,
            NOTIFY_CHANNEL,
        )
    except asyncpg.CheckViolationError:
        # The database's own floor under the balance; the check above should have held.
        raise insufficient_balance() from None
    if posted is None:
        # What is left once the holds for other merchants are set aside is too little.
        raise insufficient_balance()
    if (posted["created_at"], posted["balance_after"]) != (now, balance_after):
        raise RuntimeError("the posted payment differs from the answer prepared for it")
    return result
