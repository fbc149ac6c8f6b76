"""One-time payment and cash top-up codes (only their hashes are kept). SQL only."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg

from services.wallet.domain.codes import code_hash, new_numeric_code
from services.wallet.domain.payments import CodeHolder, SpentCode, code_invalid
from services.wallet.domain.wallets import require_active
from services.wallet.storage import wallets


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
        code = new_numeric_code()
        async with self._pool.acquire() as conn, conn.transaction():
            wallet = await wallets.lock(conn, wallet_id)
            require_active(wallet.status)
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
        row = await self._pool.fetchrow(
            "select c.wallet_id, w.payer_id, c.device_id, c.session_id, c.channel"
            " from one_time_codes c join wallets w on w.id = c.wallet_id"
            " where c.code_hash = $1 and c.purpose = $2 and c.status = 'active'"
            " and c.expires_at > now() and not exists (select 1 from revoked_sessions r"
            " where r.session_id = c.session_id)",
            code_hash(code),
            purpose,
        )
        if row is None or self._session_revoked(row["session_id"]):
            return None
        return CodeHolder(
            row["wallet_id"], row["payer_id"], row["device_id"], row["session_id"], row["channel"]
        )
