"""In-memory stand-ins for the wallet's ports, for testing use cases without a database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.runtime.errors import AlreadyExists, FailedPrecondition
from services.wallet.domain.merchants import Merchant, StoreRow
from services.wallet.domain.payments import CodeHolder, Presented
from services.wallet.domain.risk import PaymentCheck, TopUpCheck
from services.wallet.domain.top_ups import FundingRefused, FundingUnavailable, PendingTopUp

Result = dict[str, Any]


class Answers:
    """Results stored under (scope, key) with the request's hash, as idempotency keys are."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], tuple[str, Result]] = {}

    def replay(self, scope: str, key: str, request_hash: str) -> Result | None:
        found = self.stored.get((scope, key))
        if found is None:
            return None
        if found[0] != request_hash:
            raise AlreadyExists("IDEMPOTENCY_KEY_REUSED", "used for a different request")
        return found[1]

    def store(self, scope: str, key: str, request_hash: str, result: Result) -> Result:
        self.stored[(scope, key)] = (request_hash, result)
        return result


@dataclass
class FakeRisk:
    payments_suspended: bool = False
    suspended_channels: set[str] = field(default_factory=set)
    refuse: bool = False
    wind_down: bool = False
    payments: list[PaymentCheck] = field(default_factory=list)
    top_ups: list[TopUpCheck] = field(default_factory=list)

    def require_top_ups_open(self, channel: str) -> None:
        if channel in self.suspended_channels:
            raise FailedPrecondition("CHANNEL_SUSPENDED", "suspended")

    def require_payments_open(self) -> None:
        if self.payments_suspended:
            raise FailedPrecondition("PAYMENTS_SUSPENDED", "suspended")

    async def assess_top_up(self, check: TopUpCheck) -> str:
        self.top_ups.append(check)
        if self.refuse:
            raise FailedPrecondition("RISK_DENIED", "refused")
        return f"decision-{len(self.top_ups)}"

    async def assess_payment(self, check: PaymentCheck) -> str:
        self.payments.append(check)
        if self.refuse:
            raise FailedPrecondition("RISK_DENIED", "refused")
        return f"decision-{len(self.payments)}"

    async def open_case(
        self, *, wallet_id: str, movement_id: str, description: str, idempotency_key: str
    ) -> str:
        return "case-1"

    async def confirmed_movements(self, case_id: str) -> list[str]:
        return []


class FakeCodes:
    def __init__(self) -> None:
        self.live: dict[str, CodeHolder] = {}

    def give(self, code: str, holder: CodeHolder) -> None:
        self.live[code] = holder

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
        code = f"{len(self.live):020d}"
        self.live[code] = CodeHolder(wallet_id, "payer", device_id, session_id, channel)
        return code, datetime.now(UTC) + lifetime

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
        code = f"{len(self.live):020d}"
        self.live[code] = CodeHolder(uuid.uuid4(), payer_id, device_id, session_id, channel)
        return code, datetime.now(UTC) + lifetime

    async def code_holder(self, code: str, purpose: str) -> CodeHolder | None:
        return self.live.get(code)


class FakePaymentLedger:
    """Spends codes and holds and records each capture, under idempotency keys."""

    def __init__(self, codes: FakeCodes) -> None:
        self._codes = codes
        self.answers = Answers()
        self.holds: dict[uuid.UUID, int] = {}
        self.captured: list[Result] = []

    async def replay(self, scope: str, key: str, request_hash: str) -> Result | None:
        return self.answers.replay(scope, key, request_hash)

    async def presented(self, scope: str, key: str, request_hash: str, code: str) -> Presented:
        replayed = self.answers.replay(scope, key, request_hash)
        return Presented(replayed, None if replayed else self._codes.live.get(code))

    def _payment(self, store: StoreRow, amount: int, **fields: Any) -> Result:
        return {
            "movement_id": str(uuid.uuid4()),
            "authorization_id": "",
            "amount": amount,
            "merchant_id": str(store.merchant_id),
            "store_id": str(store.id),
            "occurred_at": datetime.now(UTC).isoformat(),
            "hold_expires_at": "",
            "refunded": 0,
            **fields,
        }

    async def authorize(
        self,
        *,
        code: str,
        amount: int,
        store: StoreRow,
        hold: timedelta,
        idempotency_key: str,
        request_hash: str,
    ) -> Result:
        if self._codes.live.pop(code, None) is None:
            raise FailedPrecondition("CODE_INVALID", "dead")
        authorization_id = uuid.uuid4()
        self.holds[authorization_id] = amount
        result = self._payment(
            store, amount, movement_id="", authorization_id=str(authorization_id)
        )
        return self.answers.store(
            f"authorize:{store.merchant_id}", idempotency_key, request_hash, result
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
    ) -> Result:
        spent = [code for code, live in self._codes.live.items() if live == holder]
        if not spent:
            raise FailedPrecondition("CODE_INVALID", "dead")
        del self._codes.live[spent[0]]
        result = self._payment(store, amount, decision_id=decision_id)
        self.captured.append(result)
        return self.answers.store(
            f"capture:{store.merchant_id}", idempotency_key, request_hash, result
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
    ) -> Result:
        if self.holds.pop(authorization_id, None) is None:
            raise FailedPrecondition("AUTHORIZATION_INVALID", "dead")
        result = self._payment(store, amount, authorization_id=str(authorization_id))
        self.captured.append(result)
        return self.answers.store(
            f"capture:{store.merchant_id}", idempotency_key, request_hash, result
        )

    async def void_authorization(self, authorization_id: uuid.UUID, merchant_id: uuid.UUID) -> None:
        self.holds.pop(authorization_id, None)


@dataclass
class Reservation:
    wallet_id: uuid.UUID
    pending: PendingTopUp
    request_hash: str
    status: str = "pending"
    reference: str = ""


class FakeTopUpLedger:
    """Reservations and postings of top-ups from outside parties, in memory."""

    def __init__(self) -> None:
        self.answers = Answers()
        self.reservations: dict[str, Reservation] = {}
        self.posted: list[Result] = []

    async def replay(self, wallet_id: uuid.UUID, key: str, request_hash: str) -> Result | None:
        return self.answers.replay(f"top_up:{wallet_id}", key, request_hash)

    async def reserve(
        self,
        *,
        wallet_id: uuid.UUID,
        amount: int,
        session_id: str,
        idempotency_key: str,
        request_hash: str,
        funding_source_id: uuid.UUID | None = None,
    ) -> Result | PendingTopUp:
        replayed = await self.replay(wallet_id, idempotency_key, request_hash)
        if replayed is not None:
            return replayed
        found = self.reservations.get(idempotency_key)
        if found is not None and found.status == "pending":
            return found.pending
        channel = "points" if funding_source_id is None else "card"
        source = "payer-1" if funding_source_id is None else "tok_card"
        pending = PendingTopUp(uuid.uuid4(), channel, amount, source)
        self.reservations[idempotency_key] = Reservation(wallet_id, pending, request_hash)
        return pending

    def _by_id(self, top_up_id: uuid.UUID) -> tuple[str, Reservation]:
        return next(
            (k, r) for k, r in self.reservations.items() if r.pending.top_up_id == top_up_id
        )

    async def finish(
        self, top_up_id: uuid.UUID, reference: str, *, decision_id: str = ""
    ) -> Result:
        key, reservation = self._by_id(top_up_id)
        reservation.status, reservation.reference = "completed", reference
        result = {
            "movement_id": str(uuid.uuid4()),
            "amount": reservation.pending.amount,
            "balance_after": sum(int(r["amount"]) for r in self.posted)
            + reservation.pending.amount,
            "channel": reservation.pending.channel,
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        self.posted.append(result)
        return self.answers.store(
            f"top_up:{reservation.wallet_id}", key, reservation.request_hash, result
        )

    async def fail(self, top_up_id: uuid.UUID) -> None:
        key, reservation = self._by_id(top_up_id)
        reservation.status = "failed"
        del self.reservations[key]

    async def replay_cash(
        self, merchant_id: uuid.UUID, key: str, request_hash: str
    ) -> Result | None:
        return self.answers.replay(f"cash:{merchant_id}", key, request_hash)

    async def accept_cash_top_up(
        self,
        *,
        code: str,
        amount: int,
        store: StoreRow,
        idempotency_key: str,
        request_hash: str,
        decision_id: str = "",
    ) -> Result:
        raise NotImplementedError("cash top-ups are not exercised with this fake")


class OutsideParty:
    """An outside party holding the payer's money: answers, refuses, or loses its answer."""

    def __init__(self) -> None:
        self.taken: dict[str, int] = {}
        self.refuse_with = ""
        self.lose_next_answer = False

    async def take(self, top_up: PendingTopUp) -> str:
        if self.refuse_with:
            raise FundingRefused(self.refuse_with)
        # Deduplicated by the reservation's key, as the processor and the program do.
        self.taken.setdefault(top_up.idempotency_key, top_up.amount)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise FundingUnavailable("timeout")
        return f"ref-{top_up.top_up_id.hex}"


def a_store() -> tuple[Merchant, StoreRow]:
    merchant = Merchant(uuid.uuid4(), "Lawson", "5411")
    return merchant, StoreRow(uuid.uuid4(), merchant.id, "Lawson 1")
