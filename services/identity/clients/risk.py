"""Identity's calls to risk: assess before hashing, report every outcome after.

Risk being down, slow or not serving an RPC is an answer too: UNAVAILABLE,
which makes every sign-in require a second factor.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import grpc
import structlog
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

from services.identity.domain.login import RiskVerdict
from services.runtime.batching import BatcherFull, CallBatcher, grpc_one_by_one

log = structlog.get_logger(__name__)

# The most failed sign-ins one report may stand for (RecordOutcomeRequest.represents).
MAX_REPRESENTED = 1_000_000

_VERDICTS = {
    risk_pb2.VERDICT_ALLOW: RiskVerdict.ALLOW,
    risk_pb2.VERDICT_CHALLENGE: RiskVerdict.CHALLENGE,
    risk_pb2.VERDICT_THROTTLE: RiskVerdict.THROTTLE,
    risk_pb2.VERDICT_DENY: RiskVerdict.DENY,
}

Outcome = risk_pb2.Outcome


@dataclass(frozen=True)
class Assessment:
    verdict: RiskVerdict
    decision_id: str = ""
    country_code: str = ""


class RiskClient:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout_seconds: float,
        refusal_reports_per_second: float = 50.0,
    ) -> None:
        self._stub = risk_pb2_grpc.RiskServiceStub(channel)
        self._timeout = timeout_seconds
        self._refusal_rate = refusal_reports_per_second
        # A token bucket of one second's worth: a burst is reported, a flood is sampled.
        self._refusal_tokens = refusal_reports_per_second
        self._refusal_filled_at = time.monotonic()
        # Refusals since the last report that went unreported (past the rate).
        self._refusals_unreported = 0
        # Outcome reports run in the background; keep references so none is collected mid-flight.
        self._reports: set[asyncio.Task[None]] = set()
        # Sign-ins that arrive while risk answers earlier ones are assessed in one call,
        # and outcomes reported meanwhile recorded in one call: under a flood risk
        # answers a few calls carrying hundreds of attempts, not hundreds of calls.
        self._logins = CallBatcher(
            self._assess_logins,
            name="risk.AssessLogins",
            one_by_one=grpc_one_by_one(self._assess_one),
        )
        self._outcomes = CallBatcher(
            self._record_outcomes,
            name="risk.RecordOutcomes",
            one_by_one=grpc_one_by_one(self._record_one),
        )

    async def assess_login(
        self,
        *,
        account_id: uuid.UUID | None,
        identifier_hash: str,
        client: common_pb2.ClientContext,
        known_device: bool,
        method: str,
    ) -> Assessment:
        request = risk_pb2.AssessLoginRequest(
            account_id=str(account_id or ""),
            identifier_hash=identifier_hash,
            client=client,
            known_device=known_device,
            method=method,
        )
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._logins.call(request)
        except grpc.aio.AioRpcError as error:
            log.warning("risk.assess_login_unavailable", code=error.code().name)
            return Assessment(RiskVerdict.UNAVAILABLE)
        except TimeoutError:
            log.warning("risk.assess_login_unavailable", code="DEADLINE_EXCEEDED")
            return Assessment(RiskVerdict.UNAVAILABLE)
        except BatcherFull:
            log.warning("risk.assess_login_unavailable", code="RESOURCE_EXHAUSTED")
            return Assessment(RiskVerdict.UNAVAILABLE)
        except Exception as error:
            # Whatever else kept risk's answer away, the sign-in is unassessed, not broken.
            log.error("risk.assess_login_unavailable", code="UNKNOWN", exc_info=error)
            return Assessment(RiskVerdict.UNAVAILABLE)
        verdict = _VERDICTS.get(reply.decision.verdict, RiskVerdict.UNAVAILABLE)
        return Assessment(verdict, reply.decision.decision_id, reply.decision.country_code)

    async def _assess_logins(
        self, requests: list[risk_pb2.AssessLoginRequest]
    ) -> list[risk_pb2.AssessLoginResponse | BaseException]:
        batch = risk_pb2.AssessLoginsRequest(assessments=requests)
        reply = await self._stub.AssessLogins(batch, timeout=self._timeout)
        return list(reply.answers)

    async def _assess_one(
        self, request: risk_pb2.AssessLoginRequest
    ) -> risk_pb2.AssessLoginResponse:
        reply: risk_pb2.AssessLoginResponse = await self._stub.AssessLogin(
            request, timeout=self._timeout
        )
        return reply

    async def assess_registration(
        self, *, email_domain: str, client: common_pb2.ClientContext
    ) -> Assessment:
        request = risk_pb2.AssessRegistrationRequest(email_domain=email_domain, client=client)
        try:
            reply = await self._stub.AssessRegistration(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            log.warning("risk.assess_registration_unavailable", code=error.code().name)
            return Assessment(RiskVerdict.UNAVAILABLE)
        verdict = _VERDICTS.get(reply.decision.verdict, RiskVerdict.UNAVAILABLE)
        return Assessment(verdict, reply.decision.decision_id, reply.decision.country_code)

    def record_outcome(
        self,
        outcome: risk_pb2.Outcome.ValueType,
        *,
        decision_id: str = "",
        account_id: uuid.UUID | None = None,
        session_id: uuid.UUID | None = None,
        client: common_pb2.ClientContext | None = None,
        identifier_hash: str = "",
        represents: int = 1,
    ) -> None:
        """Report without making the person wait; a lost report only weakens a signal.
        ``represents``: how many failed sign-ins the report stands for (see
        ``report_refusal``)."""
        request = risk_pb2.RecordOutcomeRequest(
            decision_id=decision_id,
            outcome=outcome,
            account_id=str(account_id or ""),
            session_id=str(session_id or ""),
            client=client,
            identifier_hash=identifier_hash,
            represents=represents if represents > 1 else 0,
        )
        task = asyncio.create_task(self._report(request))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    def report_refusal(self, *, client: common_pb2.ClientContext, identifier_hash: str) -> bool:
        """Tell risk of a password attempt refused before it was asked (a blocked or
        contained network, a full hashing lane), as the failure it is, so a wave
        stays visible to it. At most ``refusal_reports_per_second``: beyond that a
        flood is sampled, and each refusal past the rate costs no call at all; the
        next report stands for the refusals left out before it, so risk still counts
        every failure across all addresses (and sees a wave as soon as it starts).
        True when this one was reported."""
        now = time.monotonic()
        self._refusal_tokens = min(
            self._refusal_rate,
            self._refusal_tokens + (now - self._refusal_filled_at) * self._refusal_rate,
        )
        self._refusal_filled_at = now
        if self._refusal_tokens < 1:
            self._refusals_unreported += 1
            return False
        self._refusal_tokens -= 1
        represents = min(1 + self._refusals_unreported, MAX_REPRESENTED)
        self._refusals_unreported = 0
        self.record_outcome(
            risk_pb2.OUTCOME_PASSWORD_WRONG,
            client=client,
            identifier_hash=identifier_hash,
            represents=represents,
        )
        return True

    async def _report(self, request: risk_pb2.RecordOutcomeRequest) -> None:
        try:
            await self._outcomes.call(request)
        except grpc.aio.AioRpcError as error:
            log.warning("risk.record_outcome_failed", code=error.code().name)
        except BatcherFull:
            log.warning("risk.record_outcome_failed", code="RESOURCE_EXHAUSTED")
        except Exception as error:
            log.error("risk.record_outcome_failed", code="UNKNOWN", exc_info=error)

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

    async def drain(self) -> None:
        if self._reports:
            await asyncio.wait(self._reports, timeout=5)
