"""Sessions identity revoked, and voiding what they made in the wallet. SQL only."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


class RevokedSessions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def void_sessions(self, session_ids: Sequence[str]) -> tuple[int, int, int]:
        """Void the live codes, release the holds and forget the payout accounts made
        in ``session_ids`` (revoked sessions); returns how many of each. Idempotent:
        every replica follows the revocations and may void the same sessions.

        Each wallet concerned is locked first, as a capture locks it before spending
        a code or a hold, so a capture racing this either committed before (and its
        code or hold is no longer live) or finds the code or hold voided.
        """
        async with self._pool.acquire() as conn, conn.transaction():
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
