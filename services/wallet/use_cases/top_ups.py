"""Money into a wallet: from a registered card, from loyalty points, in cash at a register.

Card and points top-ups are one path (``fund``): reserve under the limits, ask
the outside party through its ``ExternalFunding`` port, post. A retry with the
same key resumes where the first request stopped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.runtime.errors import FailedPrecondition, Unavailable
from services.runtime.tokens import TokenClaims
from services.wallet.domain.codes import fingerprint
from services.wallet.domain.merchants import StoreRow
from services.wallet.domain.payments import code_invalid
from services.wallet.domain.risk import CARD, CASH_REGISTER, POINTS, TopUpCheck
from services.wallet.domain.top_ups import (
    FundingRefused,
    FundingUnavailable,
    PendingTopUp,
    no_answer,
    refusal,
)
from services.wallet.domain.wallets import FundingSourceRow, require_recent_auth
from services.wallet.use_cases.ports import (
    CardVerifier,
    CodeBook,
    ExternalFunding,
    FundingSourceBook,
    Result,
    Risk,
    TopUpLedger,
    WalletBook,
)


@dataclass(frozen=True)
class TopUpRequest:
    payer: TokenClaims
    amount: int
    idempotency_key: str
    funding_source_id: uuid.UUID | None = None
    client: Any = None


async def fund(
    ledger: TopUpLedger,
    funding: ExternalFunding,
    *,
    wallet_id: uuid.UUID,
    amount: int,
    session_id: str,
    idempotency_key: str,
    request_hash: str,
    funding_source_id: uuid.UUID | None = None,
    decision_id: str = "",
) -> Result:
    """Reserve under the limits, take the money outside, post. A retry resumes where it stopped."""
    started = await ledger.reserve(
        wallet_id=wallet_id,
        amount=amount,
        session_id=session_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        funding_source_id=funding_source_id,
    )
    if not isinstance(started, PendingTopUp):
        return started
    try:
        reference = await funding.take(started)
    except FundingRefused as refused:
        await ledger.fail(started.top_up_id)
        raise refusal(started.channel, refused) from None
    except FundingUnavailable:
        # The money may have moved: keep the reservation so a retry with the
        # same key completes it instead of taking it again.
        raise no_answer(started.channel) from None
    return await ledger.finish(started.top_up_id, reference, decision_id=decision_id)


class TopUps:
    def __init__(
        self,
        wallets: WalletBook,
        sources: FundingSourceBook,
        ledger: TopUpLedger,
        codes: CodeBook,
        risk: Risk,
        *,
        card: ExternalFunding,
        points: ExternalFunding,
        verifier: CardVerifier,
        new_source_max_auth_age_seconds: int,
        cash_code_seconds: int,
    ) -> None:
        self._wallets = wallets
        self._sources = sources
        self._ledger = ledger
        self._codes = codes
        self._risk = risk
        self._card = card
        self._points = points
        self._verifier = verifier
        self._new_source_auth_age = new_source_max_auth_age_seconds
        self._cash_code_life = timedelta(seconds=cash_code_seconds)

    async def register_source(
        self, payer: TokenClaims, processor_token: str, three_ds_transaction_id: str
    ) -> FundingSourceRow:
        """A card that passed 3-D Secure becomes a funding source of the payer's wallet."""
        wallet = await self._wallets.wallet_of(payer.subject)
        try:
            card = await self._verifier.verify_card(processor_token, three_ds_transaction_id)
        except FundingRefused as declined:
            raise FailedPrecondition(
                "CARD_NOT_VERIFIED",
                "the card did not pass 3-D Secure",
                metadata={"processor": declined.reason},
            ) from None
        except FundingUnavailable:
            raise Unavailable("PROCESSOR_UNAVAILABLE", "retry later") from None
        return await self._sources.add_funding_source(
            wallet.id, processor_token, card.brand, card.last4
        )

    async def sources(self, payer: TokenClaims) -> list[FundingSourceRow]:
        wallet = await self._wallets.wallet_of(payer.subject)
        return await self._sources.funding_sources(wallet.id)

    async def remove_source(self, payer: TokenClaims, funding_source_id: uuid.UUID) -> None:
        wallet = await self._wallets.wallet_of(payer.subject)
        await self._sources.remove_funding_source(wallet.id, funding_source_id)

    async def from_card(self, request: TopUpRequest) -> Result:
        assert request.funding_source_id is not None
        request_hash = fingerprint(
            {"funding_source_id": str(request.funding_source_id), "amount": request.amount}
        )
        return await self._from_outside(request, CARD, self._card, request_hash)

    async def from_points(self, request: TopUpRequest) -> Result:
        request_hash = fingerprint({"points": request.amount})
        return await self._from_outside(request, POINTS, self._points, request_hash)

    async def _from_outside(
        self, request: TopUpRequest, channel: str, funding: ExternalFunding, request_hash: str
    ) -> Result:
        """Replay, check the card (if any), ask risk, then ``fund``."""
        payer = request.payer
        wallet = await self._wallets.wallet_of(payer.subject)
        replayed = await self._ledger.replay(wallet.id, request.idempotency_key, request_hash)
        if replayed is not None:
            return replayed
        source = None
        if request.funding_source_id is not None:
            source = await self._sources.funding_source(wallet.id, request.funding_source_id)
            if source.new_source:
                require_recent_auth(payer, self._new_source_auth_age)
        self._risk.require_top_ups_open(channel)
        decision_id = await self._risk.assess_top_up(
            TopUpCheck(
                wallet_id=str(wallet.id),
                payer_id=payer.subject,
                amount=request.amount,
                channel=channel,
                funding_source_id="" if source is None else str(source.id),
                new_funding_source=source is not None and source.new_source,
                session_id=payer.session_id,
                client=request.client,
            )
        )
        return await fund(
            self._ledger,
            funding,
            wallet_id=wallet.id,
            funding_source_id=None if source is None else source.id,
            amount=request.amount,
            session_id=payer.session_id,
            idempotency_key=request.idempotency_key,
            request_hash=request_hash,
            decision_id=decision_id,
        )

    async def issue_cash_code(self, payer: TokenClaims, channel: str) -> tuple[str, datetime]:
        wallet = await self._wallets.wallet_of(payer.subject)
        self._risk.require_top_ups_open(channel)
        return await self._codes.issue_code(
            wallet_id=wallet.id,
            purpose="cash_top_up",
            device_id=payer.device_key or "",
            session_id=payer.session_id,
            lifetime=self._cash_code_life,
            channel=channel,
        )

    async def accept_cash(
        self, *, code: str, amount: int, store: StoreRow, idempotency_key: str
    ) -> Result:
        request_hash = fingerprint({"code": code, "amount": amount, "store": str(store.id)})
        replayed = await self._ledger.replay_cash(store.merchant_id, idempotency_key, request_hash)
        if replayed is not None:
            return replayed
        holder = await self._codes.code_holder(code, "cash_top_up")
        if holder is None:
            raise code_invalid()
        channel = holder.channel or CASH_REGISTER
        self._risk.require_top_ups_open(channel)
        decision_id = await self._risk.assess_top_up(
            TopUpCheck(
                wallet_id=str(holder.wallet_id),
                payer_id=holder.payer_id,
                amount=amount,
                channel=channel,
                session_id=holder.session_id,
            )
        )
        return await self._ledger.accept_cash_top_up(
            code=code,
            amount=amount,
            store=store,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            decision_id=decision_id,
        )
