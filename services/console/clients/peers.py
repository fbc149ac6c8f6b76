"""The services the console calls, as the ``operator`` principal, naming the operator.

Every call carries ``x-operator`` (risk records ``operator:NAME`` as the actor of
policy changes) and a deadline; a refusal surfaces as ``PeerRefused`` with the
service's own status and message, which the pages show.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2, identity_pb2_grpc
from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

PAGE_SIZE = 500


class PeerRefused(Exception):
    def __init__(self, service: str, code: str, details: str) -> None:
        super().__init__(f"{service}: {code}: {details}")
        self.service = service
        self.code = code
        self.details = details


def _refused(service: str, error: grpc.aio.AioRpcError) -> PeerRefused:
    return PeerRefused(service, error.code().name, error.details() or "")


@dataclass
class Peers:
    risk: risk_pb2_grpc.RiskServiceStub
    identity: identity_pb2_grpc.IdentityServiceStub
    wallet: wallet_pb2_grpc.WalletServiceStub
    timeout: float

    async def _call(self, service: str, method: Any, request: Any, operator: str) -> Any:
        try:
            return await method(request, metadata=(("x-operator", operator),), timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise _refused(service, error) from None

    async def policy(self, operator: str) -> risk_pb2.Policy:
        reply = await self._call(
            "risk", self.risk.GetPolicies, risk_pb2.GetPoliciesRequest(), operator
        )
        policy: risk_pb2.Policy = reply.policy
        return policy

    async def set_policy(
        self, request: risk_pb2.SetPolicyRequest, operator: str
    ) -> risk_pb2.Policy:
        reply = await self._call("risk", self.risk.SetPolicy, request, operator)
        policy: risk_pb2.Policy = reply.policy
        return policy

    async def policy_changes(self, operator: str, limit: int = 50) -> list[risk_pb2.PolicyChange]:
        request = risk_pb2.ListPolicyChangesRequest(page=common_pb2.PageRequest(page_size=limit))
        reply = await self._call("risk", self.risk.ListPolicyChanges, request, operator)
        return list(reply.changes)

    async def alerts(self, operator: str, limit: int = 50) -> list[risk_pb2.Alert]:
        request = risk_pb2.ListAlertsRequest(page=common_pb2.PageRequest(page_size=limit))
        reply = await self._call("risk", self.risk.ListAlerts, request, operator)
        return list(reply.alerts)

    async def update_alert(
        self, alert_id: str, status: int, note: str, operator: str
    ) -> risk_pb2.Alert:
        request = risk_pb2.UpdateAlertRequest(alert_id=alert_id, status=status, note=note)  # type: ignore[arg-type]
        reply = await self._call("risk", self.risk.UpdateAlert, request, operator)
        alert: risk_pb2.Alert = reply.alert
        return alert

    async def cases(self, operator: str, limit: int = 50) -> list[risk_pb2.Case]:
        request = risk_pb2.ListCasesRequest(page=common_pb2.PageRequest(page_size=limit))
        reply = await self._call("risk", self.risk.ListCases, request, operator)
        return list(reply.cases)

    async def case(self, case_id: str, operator: str) -> risk_pb2.Case:
        reply = await self._call(
            "risk", self.risk.GetCase, risk_pb2.GetCaseRequest(case_id=case_id), operator
        )
        found: risk_pb2.Case = reply.case
        return found

    async def confirm_fraud(
        self, case_id: str, indicators: risk_pb2.Indicators, reason: str, operator: str
    ) -> risk_pb2.Case:
        request = risk_pb2.ConfirmFraudRequest(
            case_id=case_id, indicators=indicators, reason=reason
        )
        reply = await self._call("risk", self.risk.ConfirmFraud, request, operator)
        found: risk_pb2.Case = reply.case
        return found

    async def victims(
        self, query: str | risk_pb2.Indicators, operator: str
    ) -> risk_pb2.FindAffectedAccountsResponse:
        """By a confirmed case's ID, or by indicators given directly."""
        request = (
            risk_pb2.FindAffectedAccountsRequest(case_id=query)
            if isinstance(query, str)
            else risk_pb2.FindAffectedAccountsRequest(indicators=query)
        )
        reply: risk_pb2.FindAffectedAccountsResponse = await self._call(
            "risk", self.risk.FindAffectedAccounts, request, operator
        )
        return reply

    async def compensate(
        self, case_id: str, reason: str, operator: str
    ) -> wallet_pb2.CompensateCaseResponse:
        request = wallet_pb2.CompensateCaseRequest(case_id=case_id, reason=reason)
        reply: wallet_pb2.CompensateCaseResponse = await self._call(
            "wallet", self.wallet.CompensateCase, request, operator
        )
        return reply

    async def decisions(
        self, since: timestamp_pb2.Timestamp, operator: str, most: int
    ) -> list[risk_pb2.DecisionRecord]:
        found: list[risk_pb2.DecisionRecord] = []
        token = ""
        while len(found) < most:
            request = risk_pb2.ListDecisionsRequest(
                since=since, page=common_pb2.PageRequest(page_size=PAGE_SIZE, page_token=token)
            )
            reply = await self._call("risk", self.risk.ListDecisions, request, operator)
            found.extend(reply.decisions)
            token = reply.next_page_token
            if not token:
                break
        return found[:most]

    async def force_reset(
        self, request: identity_pb2.ForceCredentialResetRequest, operator: str
    ) -> AsyncIterator[identity_pb2.ForceCredentialResetResponse]:
        """The reset's progress messages; the stream has no deadline (it may be long)."""
        stream = self.identity.ForceCredentialReset(request, metadata=(("x-operator", operator),))
        try:
            async for progress in stream:
                yield progress
        except grpc.aio.AioRpcError as error:
            raise _refused("identity", error) from None
