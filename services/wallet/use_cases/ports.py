"""What the use cases need from outside, as Protocols (adapters in storage/ and clients/)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.wallet.domain.compensation import CompensationLineRow, UnauthorizedMovement
from services.wallet.domain.ledger import Reconciliation, StatementLine
from services.wallet.domain.limits import Room
from services.wallet.domain.merchants import Merchant, StoreRow
from services.wallet.domain.payments import CodeHolder, Presented
from services.wallet.domain.payouts import UnclaimedRow
from services.wallet.domain.risk import PaymentCheck, TopUpCheck
from services.wallet.domain.top_ups import PendingTopUp, VerifiedCard
from services.wallet.domain.wallets import FundingSourceRow, WalletRow

# A movement's answer as first given, stored under its idempotency key and
# replayed to every retry with that key.
Result = dict[str, Any]


class ExternalFunding(Protocol):
    """An outside party holding the payer's money (the card processor, the points program)."""

    async def take(self, top_up: PendingTopUp) -> str:
        """Take the reserved amount; its id for the money taken.

        Raises ``FundingRefused`` (definitive) or ``FundingUnavailable`` (retry
        with the same reservation: ``top_up.idempotency_key`` deduplicates).
        """
        ...


class Risk(Protocol):
    @property
    def wind_down(self) -> bool: ...

    def require_top_ups_open(self, channel: str) -> None: ...

    def require_payments_open(self) -> None: ...

    async def assess_top_up(self, check: TopUpCheck) -> str: ...

    async def assess_payment(self, check: PaymentCheck) -> str: ...

    async def open_case(
        self, *, wallet_id: str, movement_id: str, description: str, idempotency_key: str
    ) -> str: ...

    async def confirmed_movements(self, case_id: str) -> list[str]: ...


class WalletBook(Protocol):
    async def wallet_of(self, payer_id: str) -> WalletRow: ...


class WalletAdmin(WalletBook, Protocol):
    async def enroll(self, payer_id: str) -> WalletRow: ...

    async def set_status(
        self, wallet_id: uuid.UUID, status: str, reason: str, *, notify: bool = True
    ) -> WalletRow: ...

    async def close(self, payer_id: str) -> None: ...


class History(Protocol):
    async def statement(
        self, wallet_id: uuid.UUID, *, limit: int, after: int | None
    ) -> tuple[list[StatementLine], int | None]: ...

    async def reconcile(self) -> Reconciliation: ...


class LimitRoom(Protocol):
    async def room(self, wallet_id: uuid.UUID) -> Room: ...


class CodeBook(Protocol):
    async def issue_code(
        self,
        *,
        wallet_id: uuid.UUID,
        purpose: str,
        device_id: str,
        session_id: str,
        lifetime: timedelta,
        channel: str | None = None,
    ) -> tuple[str, datetime]: ...

    async def issue_payer_code(
        self,
        *,
        payer_id: str,
        purpose: str,
        device_id: str,
        session_id: str,
        lifetime: timedelta,
        channel: str | None = None,
    ) -> tuple[str, datetime]: ...

    async def code_holder(self, code: str, purpose: str) -> CodeHolder | None: ...


class MerchantBook(Protocol):
    async def register_merchant(self, name: str, category: str) -> tuple[Merchant, str]: ...

    async def register_store(
        self, merchant_id: uuid.UUID, store_code: str, name: str
    ) -> uuid.UUID: ...

    async def merchant_by_key(self, key: str) -> Merchant | None: ...

    async def store_of(self, merchant_id: uuid.UUID, store_id: uuid.UUID) -> StoreRow: ...

    async def stores_of(self, merchant_id: uuid.UUID, *, limit: int) -> list[StoreRow]: ...


class PaymentLedger(Protocol):
    async def replay(self, scope: str, key: str, request_hash: str) -> Result | None: ...

    async def presented(self, scope: str, key: str, request_hash: str, code: str) -> Presented: ...

    async def authorize(
        self,
        *,
        code: str,
        amount: int,
        store: StoreRow,
        hold: timedelta,
        idempotency_key: str,
        request_hash: str,
    ) -> Result: ...

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
    ) -> Result: ...

    async def capture_authorization(
        self,
        *,
        authorization_id: uuid.UUID,
        amount: int,
        store: StoreRow,
        merchant_name: str,
        idempotency_key: str,
        request_hash: str,
    ) -> Result: ...

    async def void_authorization(
        self, authorization_id: uuid.UUID, merchant_id: uuid.UUID
    ) -> None: ...


class TopUpLedger(Protocol):
    async def replay(self, wallet_id: uuid.UUID, key: str, request_hash: str) -> Result | None: ...

    async def reserve(
        self,
        *,
        wallet_id: uuid.UUID,
        amount: int,
        session_id: str,
        idempotency_key: str,
        request_hash: str,
        funding_source_id: uuid.UUID | None = None,
    ) -> Result | PendingTopUp: ...

    async def finish(
        self, top_up_id: uuid.UUID, reference: str, *, decision_id: str = ""
    ) -> Result: ...

    async def fail(self, top_up_id: uuid.UUID) -> None: ...

    async def replay_cash(
        self, merchant_id: uuid.UUID, key: str, request_hash: str
    ) -> Result | None: ...

    async def accept_cash_top_up(
        self,
        *,
        code: str,
        amount: int,
        store: StoreRow,
        idempotency_key: str,
        request_hash: str,
        decision_id: str = "",
    ) -> Result: ...


class RefundLedger(Protocol):
    async def refund(
        self,
        *,
        payment_id: uuid.UUID,
        amount: int,
        merchant_id: uuid.UUID | None,
        idempotency_key: str,
        request_hash: str,
    ) -> Result: ...


class CompensationBook(Protocol):
    async def movements_for_compensation(
        self, movement_ids: Sequence[uuid.UUID]
    ) -> list[UnauthorizedMovement]: ...

    async def plan_compensation(
        self, case_id: uuid.UUID, movements: Sequence[UnauthorizedMovement], reason: str
    ) -> None: ...

    async def compensation_lines(self, case_id: uuid.UUID) -> list[CompensationLineRow]: ...

    async def settle_line(self, case_id: uuid.UUID, movement_id: uuid.UUID) -> bool: ...


class PayoutBook(Protocol):
    async def mark_balance_holders_notified(self, deadline: str, *, batch: int = 500) -> int: ...

    async def register_payout_account(
        self,
        wallet_id: uuid.UUID,
        *,
        bank_code: str,
        branch_code: str,
        account_number: str,
        holder_name: str,
        session_id: str = "",
    ) -> None: ...

    async def claim_payout(
        self, wallet_id: uuid.UUID, *, idempotency_key: str, request_hash: str
    ) -> Result: ...

    async def unclaimed(
        self, *, limit: int, after: uuid.UUID | None
    ) -> tuple[list[UnclaimedRow], int, int, uuid.UUID | None]: ...


class CardVerifier(Protocol):
    async def verify_card(self, token: str, three_ds_transaction_id: str) -> VerifiedCard: ...


class CardRefunds(Protocol):
    async def refund(self, charge_id: str, amount: int, *, idempotency_key: str) -> str: ...


class FundingSourceBook(Protocol):
    async def add_funding_source(
        self, wallet_id: uuid.UUID, processor_token: str, brand: str, last4: str
    ) -> FundingSourceRow: ...

    async def funding_sources(self, wallet_id: uuid.UUID) -> list[FundingSourceRow]: ...

    async def remove_funding_source(
        self, wallet_id: uuid.UUID, funding_source_id: uuid.UUID
    ) -> None: ...

    async def funding_source(
        self, wallet_id: uuid.UUID, funding_source_id: uuid.UUID
    ) -> FundingSourceRow: ...
