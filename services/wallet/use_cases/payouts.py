"""Wind-down and closed wallets: telling holders, where payouts go, paying out."""

from __future__ import annotations

import uuid
from datetime import date

from services.runtime.errors import FailedPrecondition
from services.runtime.tokens import TokenClaims
from services.wallet.domain.payouts import UnclaimedRow
from services.wallet.domain.wallets import require_recent_auth
from services.wallet.use_cases.ports import PayoutBook, Result, Risk, WalletBook


class Payouts:
    def __init__(
        self,
        wallets: WalletBook,
        payouts: PayoutBook,
        risk: Risk,
        *,
        payout_max_auth_age_seconds: int,
    ) -> None:
        self._wallets = wallets
        self._payouts = payouts
        self._risk = risk
        self._auth_age = payout_max_auth_age_seconds

    async def notify_balance_holders(self, deadline: date) -> int:
        if not self._risk.wind_down:
            raise FailedPrecondition("NOT_IN_WIND_DOWN", "risk's policy is not in wind-down")
        return await self._payouts.mark_balance_holders_notified(deadline.isoformat())

    async def register_account(
        self,
        payer: TokenClaims,
        *,
        bank_code: str,
        branch_code: str,
        account_number: str,
        holder_name: str,
    ) -> None:
        # Where the balance goes is as sensitive as spending it: a stolen session
        # must not redirect the payout.
        require_recent_auth(payer, self._auth_age)
        wallet = await self._wallets.wallet_of(payer.subject)
        await self._payouts.register_payout_account(
            wallet.id,
            bank_code=bank_code,
            branch_code=branch_code,
            account_number=account_number,
            holder_name=holder_name,
            session_id=payer.session_id,
        )

    async def claim(self, payer: TokenClaims, idempotency_key: str) -> Result:
        require_recent_auth(payer, self._auth_age)
        wallet = await self._wallets.wallet_of(payer.subject)
        if not self._risk.wind_down and wallet.status != "closed":
            raise FailedPrecondition(
                "PAYOUTS_NOT_OPEN", "payouts open at wind-down or when the wallet is closed"
            )
        return await self._payouts.claim_payout(
            wallet.id, idempotency_key=idempotency_key, request_hash="whole-balance"
        )

    async def unclaimed(
        self, *, limit: int, after: uuid.UUID | None
    ) -> tuple[list[UnclaimedRow], int, int, uuid.UUID | None]:
        return await self._payouts.unclaimed(limit=limit, after=after)
