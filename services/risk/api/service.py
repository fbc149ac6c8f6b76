"""The RiskService handlers: proto -> command -> use case -> proto, nothing else."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TypeAlias

from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

from services.risk.api import convert
from services.risk.domain.cases import Indicators
from services.risk.use_cases.alerts import Alerts
from services.risk.use_cases.assessments import Assessments
from services.risk.use_cases.cases import Cases
from services.risk.use_cases.decisions import Decisions
from services.risk.use_cases.policies import Policies
from services.runtime.access import current_caller
from services.runtime.errors import each_item, invalid

_OPERATOR_NAME = re.compile(r"^[\w.@+-]{1,64}$")

# grpc ships no type information, so the context is untyped.
Context: TypeAlias = Any


def actor_of(context: Context) -> str:
    """The certificate principal, plus the person's name an operator tool passes along."""
    caller = current_caller()
    for key, value in context.invocation_metadata() or ():
        if key == "x-operator":
            name = value if isinstance(value, str) else value.decode()
            if not _OPERATOR_NAME.match(name):
                raise invalid("x-operator", "must be 1 to 64 letters, digits or ._@+-")
            return f"{caller}:{name}"
    return caller


class RiskApi(risk_pb2_grpc.RiskServiceServicer):
    def __init__(
        self,
        *,
        assessments: Assessments,
        decisions: Decisions,
        policies: Policies,
        alerts: Alerts,
        cases: Cases,
    ) -> None:
        self._assessments = assessments
        self._decisions = decisions
        self._policies = policies
        self._alerts = alerts
        self._cases = cases

    # ------------------------------------------------------------ assessments

    async def AssessLogin(
        self, request: risk_pb2.AssessLoginRequest, context: Context
    ) -> risk_pb2.AssessLoginResponse:
        decision = await self._assessments.login(convert.login_command(request))
        return risk_pb2.AssessLoginResponse(decision=convert.decision_to_proto(decision))

    async def AssessLogins(
        self, request: risk_pb2.AssessLoginsRequest, context: Context
    ) -> risk_pb2.AssessLoginsResponse:
        decisions = await self._assessments.logins(
            each_item("assessments", request.assessments, convert.login_command)
        )
        return risk_pb2.AssessLoginsResponse(
            answers=[
                risk_pb2.AssessLoginResponse(decision=convert.decision_to_proto(d))
                for d in decisions
            ]
        )

    async def AssessRegistration(
        self, request: risk_pb2.AssessRegistrationRequest, context: Context
    ) -> risk_pb2.AssessRegistrationResponse:
        decision = await self._assessments.registration(convert.registration_command(request))
        return risk_pb2.AssessRegistrationResponse(decision=convert.decision_to_proto(decision))

    async def AssessTopUp(
        self, request: risk_pb2.AssessTopUpRequest, context: Context
    ) -> risk_pb2.AssessTopUpResponse:
        decision = await self._assessments.top_up(convert.top_up_command(request))
        return risk_pb2.AssessTopUpResponse(decision=convert.decision_to_proto(decision))

    async def AssessPayment(
        self, request: risk_pb2.AssessPaymentRequest, context: Context
    ) -> risk_pb2.AssessPaymentResponse:
        decision = await self._assessments.payment(convert.payment_command(request))
        return risk_pb2.AssessPaymentResponse(decision=convert.decision_to_proto(decision))

    async def AssessPayments(
        self, request: risk_pb2.AssessPaymentsRequest, context: Context
    ) -> risk_pb2.AssessPaymentsResponse:
        decisions = await self._assessments.payments(
            each_item("assessments", request.assessments, convert.payment_command)
        )
        return risk_pb2.AssessPaymentsResponse(
            answers=[
                risk_pb2.AssessPaymentResponse(decision=convert.decision_to_proto(d))
                for d in decisions
            ]
        )

    async def RecordOutcome(
        self, request: risk_pb2.RecordOutcomeRequest, context: Context
    ) -> risk_pb2.RecordOutcomeResponse:
        await self._decisions.record_outcome(convert.outcome_event(request, datetime.now(UTC)))
        return risk_pb2.RecordOutcomeResponse()

    async def RecordOutcomes(
        self, request: risk_pb2.RecordOutcomesRequest, context: Context
    ) -> risk_pb2.RecordOutcomesResponse:
        now = datetime.now(UTC)
        await self._decisions.record_outcomes(
            each_item("outcomes", request.outcomes, lambda item: convert.outcome_event(item, now))
        )
        return risk_pb2.RecordOutcomesResponse()

    async def ListDecisions(
        self, request: risk_pb2.ListDecisionsRequest, context: Context
    ) -> risk_pb2.ListDecisionsResponse:
        ip, since, limit, after = convert.decision_query(request)
        decisions = await self._decisions.page(
            account_id=request.account_id, ip=ip, since=since, limit=limit, after=after
        )
        return risk_pb2.ListDecisionsResponse(
            decisions=[convert.decision_record(d) for d in decisions],
            next_page_token=convert.next_token(
                [(d.decided_at, d.decision_id) for d in decisions], limit
            ),
        )

    # ------------------------------------------------------------ rules and policies

    async def ListRules(
        self, request: risk_pb2.ListRulesRequest, context: Context
    ) -> risk_pb2.ListRulesResponse:
        rules = await self._policies.rules()
        return risk_pb2.ListRulesResponse(rules=[convert.rule_to_proto(r) for r in rules])

    async def UpdateRule(
        self, request: risk_pb2.UpdateRuleRequest, context: Context
    ) -> risk_pb2.UpdateRuleResponse:
        update, reason = convert.rule_update(request)
        rule = await self._policies.update_rule(update, actor=actor_of(context), reason=reason)
        return risk_pb2.UpdateRuleResponse(rule=convert.rule_to_proto(rule))

    async def GetPolicies(
        self, request: risk_pb2.GetPoliciesRequest, context: Context
    ) -> risk_pb2.GetPoliciesResponse:
        policy = await self._policies.current()
        return risk_pb2.GetPoliciesResponse(policy=convert.policy_to_proto(policy))

    async def SetPolicy(
        self, request: risk_pb2.SetPolicyRequest, context: Context
    ) -> risk_pb2.SetPolicyResponse:
        change, reason = convert.policy_change(request)
        policy = await self._policies.change(change, actor=actor_of(context), reason=reason)
        return risk_pb2.SetPolicyResponse(policy=convert.policy_to_proto(policy))

    async def WatchPolicies(
        self, request: risk_pb2.WatchPoliciesRequest, context: Context
    ) -> AsyncIterator[risk_pb2.WatchPoliciesResponse]:
        # Headers at once: a follower counts itself subscribed when they arrive.
        await context.send_initial_metadata(())
        async for policy in self._policies.watch():
            yield risk_pb2.WatchPoliciesResponse(policy=convert.policy_to_proto(policy))

    async def ListPolicyChanges(
        self, request: risk_pb2.ListPolicyChangesRequest, context: Context
    ) -> risk_pb2.ListPolicyChangesResponse:
        limit, after = convert.page_of(request.page)
        changes = await self._policies.history(limit=limit, after=after)
        return risk_pb2.ListPolicyChangesResponse(
            changes=[convert.policy_change_to_proto(c) for c in changes],
            next_page_token=convert.next_token(
                [(c.changed_at, c.change_id) for c in changes], limit
            ),
        )

    # ------------------------------------------------------------ alerts

    async def ListAlerts(
        self, request: risk_pb2.ListAlertsRequest, context: Context
    ) -> risk_pb2.ListAlertsResponse:
        limit, after = convert.page_of(request.page)
        alerts = await self._alerts.page(
            status=convert.alert_status(request.status), limit=limit, after=after
        )
        return risk_pb2.ListAlertsResponse(
            alerts=[convert.alert_to_proto(a) for a in alerts],
            next_page_token=convert.next_token([(a.raised_at, a.alert_id) for a in alerts], limit),
        )

    async def UpdateAlert(
        self, request: risk_pb2.UpdateAlertRequest, context: Context
    ) -> risk_pb2.UpdateAlertResponse:
        alert = await self._alerts.update(
            uuid.UUID(request.alert_id),
            status=convert.alert_status(request.status),
            note=f"{actor_of(context)}: {request.note}" if request.note else None,
        )
        return risk_pb2.UpdateAlertResponse(alert=convert.alert_to_proto(alert))

    # ------------------------------------------------------------ cases and victims

    async def OpenCase(
        self, request: risk_pb2.OpenCaseRequest, context: Context
    ) -> risk_pb2.OpenCaseResponse:
        case = await self._cases.open(convert.open_case(request), caller=current_caller())
        return risk_pb2.OpenCaseResponse(case=convert.case_to_proto(case))

    async def GetCase(
        self, request: risk_pb2.GetCaseRequest, context: Context
    ) -> risk_pb2.GetCaseResponse:
        case = await self._cases.get(uuid.UUID(request.case_id))
        return risk_pb2.GetCaseResponse(case=convert.case_to_proto(case))

    async def ListCases(
        self, request: risk_pb2.ListCasesRequest, context: Context
    ) -> risk_pb2.ListCasesResponse:
        limit, after = convert.page_of(request.page)
        cases = await self._cases.page(
            status=convert.case_status(request.status), limit=limit, after=after
        )
        return risk_pb2.ListCasesResponse(
            cases=[convert.case_to_proto(c) for c in cases],
            next_page_token=convert.next_token([(c.opened_at, c.case_id) for c in cases], limit),
        )

    async def UpdateCase(
        self, request: risk_pb2.UpdateCaseRequest, context: Context
    ) -> risk_pb2.UpdateCaseResponse:
        case_id, status, assignee, note = convert.case_update(request)
        case = await self._cases.update(
            case_id,
            status=status,
            assignee=assignee,
            note=None if note is None else f"{actor_of(context)}: {note}",
        )
        return risk_pb2.UpdateCaseResponse(case=convert.case_to_proto(case))

    async def ConfirmFraud(
        self, request: risk_pb2.ConfirmFraudRequest, context: Context
    ) -> risk_pb2.ConfirmFraudResponse:
        case_id, indicators, reason = convert.fraud_confirmation(request)
        case = await self._cases.confirm_fraud(
            case_id, indicators, actor=actor_of(context), reason=reason
        )
        return risk_pb2.ConfirmFraudResponse(case=convert.case_to_proto(case))

    async def FindAffectedAccounts(
        self, request: risk_pb2.FindAffectedAccountsRequest, context: Context
    ) -> risk_pb2.FindAffectedAccountsResponse:
        query = convert.affected_query(request)
        given = query if isinstance(query, Indicators) else await self._cases.indicators_of(query)
        return convert.affected_to_proto(await self._cases.affected(given))
