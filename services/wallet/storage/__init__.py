"""The wallet's database, one module per aggregate; ``Storage`` holds one of each.

Every money movement is one short transaction under its idempotency key
(``idempotent``): it locks the wallet row, checks the rules that depend on the
wallet's state (status, limits, balance), writes one journal entry with postings
that sum to zero and enqueues its notice and its outcome for risk in the outbox.

``session_revoked`` says whether identity has revoked a session (this replica's
copy of the revocation stream): a code or hold of such a session is refused even
before ``RevokedSessions.void_sessions`` has voided it in the database, which
also records the session in ``revoked_sessions``; the code, hold, cash code and
payout paths refuse what a recorded session made, a record that outlives this
replica's memory and identity's announcement of the revocation.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from services.wallet.domain.limits import Limits
from services.wallet.storage.codes import Codes
from services.wallet.storage.compensation import Compensation
from services.wallet.storage.funding_sources import FundingSources
from services.wallet.storage.ledger import Ledger
from services.wallet.storage.merchants import Merchants
from services.wallet.storage.payments import Payments
from services.wallet.storage.payouts import Payouts
from services.wallet.storage.refunds import Refunds
from services.wallet.storage.revoked_sessions import RevokedSessions
from services.wallet.storage.top_ups import TopUps
from services.wallet.storage.wallets import Wallets


def _never_revoked(session_id: str) -> bool:
    return False


class Storage:
    def __init__(
        self,
        pool: asyncpg.Pool,
        limits: Limits,
        *,
        timezone: str = "Asia/Tokyo",
        session_revoked: Callable[[str], bool] | None = None,
    ) -> None:
        revoked = session_revoked or _never_revoked
        self.pool = pool
        self.wallets = Wallets(pool)
        self.ledger = Ledger(pool)
        self.funding_sources = FundingSources(pool)
        self.top_ups = TopUps(pool, limits, timezone=timezone, session_revoked=revoked)
        self.codes = Codes(pool, revoked)
        self.payments = Payments(pool, revoked)
        self.refunds = Refunds(pool)
        self.merchants = Merchants(pool)
        self.compensation = Compensation(pool)
        self.payouts = Payouts(pool, revoked)
        self.revoked_sessions = RevokedSessions(pool)

    @property
    def limits(self) -> Limits:
        return self.top_ups.limits
