"""The wallet's calls to risk, with the fallbacks the money path needs.

Top-ups are refused when risk cannot answer (money in is never urgent); store
payments fall back to risk's published ``payment_fallback_limit`` so a risk
outage does not stop every register, while a large payment still waits.
"""

from __future__ import annotations

import asyncio

import grpc
import structlog
from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

from services.runtime.batching import BatcherFull, CallBatcher, grpc_one_by_one
from services.runtime.errors import FailedPrecondition, Unavailable
from services.runtime.peers import PolicyView
from services.wallet.clients.money import jpy
from services.wallet.domain.risk import ATM, CARD, CASH_REGISTER, POINTS, PaymentCheck, TopUpCheck

log = structlog.get_logger(__name__)

CHANNEL_NAMES = {
    risk_pb2.TOP_UP_CHANNEL_CARD: CARD,
    risk_pb2.TOP_UP_CHANNEL_CASH_REGISTER: CASH_REGISTER,
    risk_pb2.TOP_UP_CHANNEL_ATM: ATM,
    risk_pb2.TOP_UP_CHANNEL_POINTS: POINTS,
}
CHANNELS_BY_NAME = {name: channel for channel, name in CHANNEL_NAMES.items()}


def _refusal(decision: risk_pb2.Decision) -> FailedPrecondition:
    rules = ",".join(reason.rule_id for reason in decision.reasons)
    metadata = {"decision_id": decision.decision_id, "rules": rules}
    if decision.verdict == risk_pb2.VERDICT_CHALLENGE:
        return FailedPrecondition(
            "STEP_UP_REQUIRED", "confirm it is you, then try again", metadata=metadata
        )
    return FailedPrecondition("RISK_DENIED", "refused by risk checks", metadata=metadata)


def _code_of(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return str(error.code().name)
    if isinstance(error, TimeoutError):
        return "DEADLINE_EXCEEDED"
    if isinstance(error, BatcherFull):
        return "RESOURCE_EXHAUSTED"
    return f"UNKNOWN: {type(error).__name__}"


class RiskGate:
    def __init__(self, channel: grpc.aio.Channel, policies: PolicyView, *, timeout: float) -> None:
        self._stub = risk_pb2_grpc.RiskServiceStub(channel)
        self.policies = policies
        self._timeout = timeout
        # The relay hands on a claimed batch of outcomes at once: one call carries them.
        self._outcomes = CallBatcher(
            self._record_outcomes,
            name="risk.RecordOutcomes",
            one_by_one=grpc_one_by_one(self._record_one),
        )
        # Captures at several registers at once are assessed in one call.
        self._payments = CallBatcher(
            self._assess_payments,
            name="risk.AssessPayments",
            one_by_one=grpc_one_by_one(self._assess_one_payment),
        )

    def require_top_ups_open(self, channel: str) -> None:
        """The channel's kill switch and wind-down, from the last policy risk streamed."""
        policy = self.policies.policy
        if policy is None:
            return
        if policy.wind_down:
            raise FailedPrecondition("WIND_DOWN", "top-ups have ended; balances are paid out")
        if CHANNELS_BY_NAME[channel] in policy.top_up_suspended_channels:
            raise FailedPrecondition(
                "CHANNEL_SUSPENDED",
                "top-ups through this channel are suspended",
                metadata={"channel": risk_pb2.TopUpChannel.Name(CHANNELS_BY_NAME[channel])},
            )

    def require_payments_open(self) -> None:
        policy = self.policies.policy
        if policy is not None and policy.payments_suspended:
            raise FailedPrecondition("PAYMENTS_SUSPENDED", "store payments are suspended")

    @property
    def wind_down(self) -> bool:
        return self.policies.policy is not None and self.policies.policy.wind_down

    async def assess_top_up(self, check: TopUpCheck) -> str:
        """The decision id when risk allows; otherwise a refusal (also when risk is away)."""
        request = risk_pb2.AssessTopUpRequest(
            wallet_id=check.wallet_id,
            payer_id=check.payer_id,
            amount=jpy(check.amount),
            channel=CHANNELS_BY_NAME[check.channel],
            funding_source_id=check.funding_source_id,
            new_funding_source=check.new_funding_source,
            session_id=check.session_id,
        )
        if check.client is not None:
            request.client.CopyFrom(check.client)
        try:
            reply = await self._stub.AssessTopUp(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            log.warning("risk.top_up_unassessed", code=error.code().name)
            raise FailedPrecondition(
                "RISK_UNAVAILABLE", "top-ups are paused while checks are unavailable"
            ) from None
        if reply.decision.verdict != risk_pb2.VERDICT_ALLOW:
            raise _refusal(reply.decision)
        return str(reply.decision.decision_id)

    async def assess_payment(self, check: PaymentCheck) -> str:
        request = risk_pb2.AssessPaymentRequest(
            wallet_id=check.wallet_id,
            payer_id=check.payer_id,
            amount=jpy(check.amount),
            merchant_id=check.merchant_id,
            merchant_category=check.merchant_category,
            store_id=check.store_id,
            basket_categories=[risk_pb2.GoodsCategory.ValueType(c) for c in check.basket],
            device_id=check.device_id,
            session_id=check.session_id,
        )
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._payments.call(request)
        except Exception as error:
            # Risk unreachable, late, overwhelmed or answering nonsense: the fallback.
            limit = (
                self.policies.policy.payment_fallback_limit.amount_minor
                if (self.policies.policy is not None)
                else 0
            )
            log.warning("risk.payment_unassessed", code=_code_of(error), fallback_limit=limit)
            if check.amount <= limit:
                return ""
            raise FailedPrecondition(
                "RISK_UNAVAILABLE",
                "payments above the fallback limit wait until checks are back",
                metadata={"fallback_limit_minor": str(limit)},
            ) from None
        if reply.decision.verdict != risk_pb2.VERDICT_ALLOW:
            raise _refusal(reply.decision)
        return str(reply.decision.decision_id)

    async def _assess_payments(
        self, requests: list[risk_pb2.AssessPaymentRequest]
    ) -> list[risk_pb2.AssessPaymentResponse | BaseException]:
        batch = risk_pb2.AssessPaymentsRequest(assessments=requests)
        reply = await self._stub.AssessPayments(batch, timeout=self._timeout)
        return list(reply.answers)

    async def _assess_one_payment(
        self, request: risk_pb2.AssessPaymentRequest
    ) -> risk_pb2.AssessPaymentResponse:
        reply: risk_pb2.AssessPaymentResponse = await self._stub.AssessPayment(
            request, timeout=self._timeout
        )
        return reply

    async def record_outcome(self, request: risk_pb2.RecordOutcomeRequest) -> None:
        await self._outcomes.call(request)

    async def _record_outcomes(
        self, requests: list[risk_pb2.RecordOutcomeRequest]
    ) -> list[risk_pb2.RecordOutcomesResponse]:
        reply = await self._stub.RecordOutcomes(
            risk_pb2.RecordOutcomesRequest(outcomes=requests), timeout=5
        )
        return [reply] * len(requests)

    async def _record_one(
        self, request: risk_pb2.RecordOutcomeRequest
    ) -> risk_pb2.RecordOutcomesResponse:
        await self._stub.RecordOutcome(request, timeout=5)
        return risk_pb2.RecordOutcomesResponse()

    async def open_case(
        self, *, wallet_id: str, movement_id: str, description: str, idempotency_key: str
    ) -> str:
        try:
            reply = await self._stub.OpenCase(
                risk_pb2.OpenCaseRequest(
                    source=risk_pb2.CASE_SOURCE_USER_REPORT,
                    wallet_id=wallet_id,
                    movement_id=movement_id,
                    description=description,
                    idempotency_key=idempotency_key,
                ),
                timeout=5,
            )
        except grpc.aio.AioRpcError as error:
            log.warning("risk.open_case_failed", code=error.code().name)
            raise Unavailable(
                "RISK_UNAVAILABLE", "the wallet is frozen; retry to open the case"
            ) from None
        return str(reply.case.case_id)

    async def confirmed_movements(self, case_id: str) -> list[str]:
        """Movement ids risk links to a confirmed-fraud case."""
        try:
            case = await self._stub.GetCase(risk_pb2.GetCaseRequest(case_id=case_id), timeout=5)
            if case.case.status not in (
                risk_pb2.CASE_STATUS_CONFIRMED_FRAUD,
                risk_pb2.CASE_STATUS_CLOSED,
            ):
                raise FailedPrecondition(
                    "CASE_NOT_CONFIRMED", "only a confirmed-fraud case can be compensated"
                )
            affected = await self._stub.FindAffectedAccounts(
                risk_pb2.FindAffectedAccountsRequest(case_id=case_id), timeout=30
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise FailedPrecondition("CASE_NOT_CONFIRMED", "no such case") from None
            log.warning("risk.find_affected_failed", code=error.code().name)
            raise Unavailable("RISK_UNAVAILABLE", "retry when risk is available") from None
        return [
            movement.movement_id for account in affected.accounts for movement in account.movements
        ]
