"""One-time payment and cash top-up codes (only their hashes are kept). SQL only."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.runtime.errors import NotFound
from services.wallet.domain.codes import code_hash, new_numeric_code
from services.wallet.domain.payments import CodeHolder, SpentCode, code_invalid
from services.wallet.domain.wallets import require_active
from services.wallet.storage import wallets

# One statement issues a code: it locks the wallet (as every path that voids or
# spends its codes does, wallet first), voids the live code of the same purpose
# and inserts the new one. The insert reads how many codes were voided, so it runs
# after the void. A code another issue committed while this one waited for the
# lock is outside this statement's snapshot: the unique index on live codes per
# wallet and purpose refuses the insert then, and the issue runs again with the
# lock taken first, so the statement's snapshot sees every code.
_ISSUE = """
    with wallet as (
        select id, status from wallets where {owner} = $1 for update
    ), voided as (
        update one_time_codes c set status = 'voided'
        from wallet
        where c.wallet_id = wallet.id and c.purpose = $2 and c.status = 'active'
          and wallet.status = 'active'
        returning c.id
    ), issued as (
        insert into one_time_codes (id, code_hash, purpose, wallet_id, device_id,
            session_id, channel, status, expires_at)
        select $3, $4, $2, wallet.id, $5, $6, $7, 'active', now() + $8::interval
        from wallet, (select count(*) from voided) as replaced
        where wallet.status = 'active'
        returning expires_at
    )
    select wallet.status, (select expires_at from issued) as expires_at from wallet
"""
_OWNERS = ("id", "payer_id")
_ISSUE_BY = {owner: _ISSUE.format(owner=owner) for owner in _OWNERS}
_LOCK_BY = {owner: f"select 1 from wallets where {owner} = $1 for update" for owner in _OWNERS}  # noqa: S608
# Besides a concurrent issue, a live code with the same digits (once in about
# 10^20) refuses the insert: a fresh code wins.
_ISSUE_ATTEMPTS = 3

# A code that may still be spent: active, unexpired, and not made in a session
# recorded as revoked (this replica's memory of revocations is checked beside it).
LIVE = (
    "c.status = 'active' and c.expires_at > now() and not exists"
    " (select 1 from revoked_sessions r where r.session_id = c.session_id)"
)
_HOLDER = f"""
    select c.id, c.wallet_id, w.payer_id, c.device_id, c.session_id, c.channel
    from one_time_codes c join wallets w on w.id = c.wallet_id
    where c.code_hash = $1 and c.purpose = $2 and {LIVE}
"""  # noqa: S608 - LIVE is a constant


async def spend(
    conn: asyncpg.Connection, code: str, purpose: str, session_revoked: Callable[[str], bool]
) -> SpentCode:
    """Mark a live code used, with its wallet locked; CODE_INVALID when it is not live."""
    # The wallet is locked before the code, in the same order as issue (wallet,
    # then its codes), so a capture racing a new code cannot deadlock.
    holder = await conn.fetchval(
        "select wallet_id from one_time_codes"
        " where code_hash = $1 and purpose = $2 and status = 'active'",
        code_hash(code),
        purpose,
    )
    if holder is None:
        raise code_invalid()
    await wallets.lock(conn, holder)
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
    # Checked under the wallet's lock, which voiding a session takes too: a capture
    # either commits before the session's codes are voided or is refused here
    # (the rollback leaves the code for the voiding).
    if row is None or session_revoked(row["session_id"]):
        raise code_invalid()
    return SpentCode(row["wallet_id"], row["device_id"], row["session_id"], row["channel"])


class Codes:
    """``session_revoked`` is this replica's copy of identity's revocations."""

    def __init__(self, pool: asyncpg.Pool, session_revoked: Callable[[str], bool]) -> None:
        self._pool = pool
        self._session_revoked = session_revoked

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
        return await self._issue(
            "id",
            wallet_id,
            wallets.wallet_not_found,
            purpose,
            device_id,
            session_id,
            lifetime,
            channel,
        )

    async def issue_payer_code(
        self,
        *,
        payer_id: str,
        purpose: str,
        device_id: str,
        session_id: str,
        lifetime: timedelta,
        channel: str | None = None,
    ) -> tuple[str, datetime]:
        """As ``issue_code``, for the payer's wallet (WALLET_NOT_FOUND until Enroll)."""
        return await self._issue(
            "payer_id",
            payer_id,
            wallets.not_enrolled,
            purpose,
            device_id,
            session_id,
            lifetime,
            channel,
        )

    async def _issue(
        self,
        owner_column: str,
        owner: uuid.UUID | str,
        missing: Callable[[], NotFound],
        purpose: str,
        device_id: str,
        session_id: str,
        lifetime: timedelta,
        channel: str | None,
    ) -> tuple[str, datetime]:
        for attempt in range(1, _ISSUE_ATTEMPTS + 1):
            code = new_numeric_code()
            values: tuple[Any, ...] = (owner, purpose, uuid.uuid4(), code_hash(code))
            values += (device_id, session_id, channel, lifetime)
            try:
                if attempt == 1:
                    row = await self._pool.fetchrow(_ISSUE_BY[owner_column], *values)
                else:
                    async with self._pool.acquire() as conn, conn.transaction():
                        await conn.execute(_LOCK_BY[owner_column], owner)
                        row = await conn.fetchrow(_ISSUE_BY[owner_column], *values)
            except asyncpg.UniqueViolationError:
                if attempt == _ISSUE_ATTEMPTS:
                    raise
                continue
            if row is None:
                raise missing()
            require_active(row["status"])
            expires_at: datetime = row["expires_at"]
            return code, expires_at
        raise AssertionError("unreachable")

    async def code_holder(self, code: str, purpose: str) -> CodeHolder | None:
        """Who a live code belongs to, without spending it; None when dead or unknown."""
        row = await self._pool.fetchrow(_HOLDER, code_hash(code), purpose)
        return holder_of(row, self._session_revoked)


def holder_of(
    row: asyncpg.Record | None, session_revoked: Callable[[str], bool]
) -> CodeHolder | None:
    """The holder from a row of ``id, wallet_id, payer_id, device_id, session_id,
    channel`` (null when no live code matched)."""
    if row is None or row["id"] is None or session_revoked(row["session_id"]):
        return None
    return CodeHolder(
        row["wallet_id"],
        row["payer_id"],
        row["device_id"],
        row["session_id"],
        row["channel"],
        code_id=row["id"],
    )
