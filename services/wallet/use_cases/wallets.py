"""A payer's wallet: enrolling, the balance and its room, the history; the
operators' freeze, unfreeze, close and reconcile; the holder's fraud report."""

from __future__ import annotations

import uuid

from services.runtime.tokens import TokenClaims
from services.wallet.domain.ledger import Reconciliation, StatementLine
from services.wallet.domain.limits import Room
from services.wallet.domain.wallets import WalletRow, require_recent_auth
from services.wallet.use_cases.ports import History, LimitRoom, Risk, WalletAdmin


class Wallets:
    def __init__(
        self,
        wallets: WalletAdmin,
        ledger: History,
        top_ups: LimitRoom,
        risk: Risk,
        *,
        enroll_max_auth_age_seconds: int,
    ) -> None:
        self._wallets = wallets
        self._ledger = ledger
        self._top_ups = top_ups
        self._risk = risk
        self._enroll_auth_age = enroll_max_auth_age_seconds

    async def enroll(self, payer: TokenClaims) -> WalletRow:
        require_recent_auth(payer, self._enroll_auth_age)
        return await self._wallets.enroll(payer.subject)

    async def balance(self, payer: TokenClaims) -> tuple[WalletRow, Room]:
        wallet = await self._wallets.wallet_of(payer.subject)
        return wallet, await self._top_ups.room(wallet.id)

    async def history(
        self, payer: TokenClaims, *, limit: int, after: int | None
    ) -> tuple[list[StatementLine], int | None]:
        wallet = await self._wallets.wallet_of(payer.subject)
        return await self._ledger.statement(wallet.id, limit=limit, after=after)

    async def report_unauthorized(
        self, payer: TokenClaims, *, movement_id: str, description: str, idempotency_key: str
    ) -> tuple[str, WalletRow]:
        """(risk's case id, the wallet): frozen first and on its own, so money stops now
        whatever happens to the case."""
        wallet = await self._wallets.wallet_of(payer.subject)
        if wallet.status == "active":
            wallet = await self._wallets.set_status(
                wallet.id, "frozen", "reported as unauthorized by the holder"
            )
        case_id = await self._risk.open_case(
            wallet_id=str(wallet.id),
            movement_id=movement_id,
            description=description,
            idempotency_key=f"{wallet.id}:{idempotency_key}",
        )
        return case_id, wallet

    async def set_status(self, wallet_id: uuid.UUID, status: str, reason: str) -> WalletRow:
        return await self._wallets.set_status(wallet_id, status, reason)

    async def close(self, payer_id: str) -> None:
        await self._wallets.close(payer_id)

    async def reconcile(self) -> Reconciliation:
        return await self._ledger.reconcile()
