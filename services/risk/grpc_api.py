"""The RiskService gRPC handlers: validate, call storage and the domain, translate."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TypeAlias

from google.protobuf import timestamp_pb2
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

from services.risk import storage
from services.risk.domain import assess, victims
from services.risk.domain.decisions import Assessment
from services.risk.domain.network import normalised, subnet_of
from services.risk.domain.policy import DEFAULT_CURRENCY, Policy, PolicyChange, parse_switch
from services.risk.domain.rules import Verdict
from services.risk.geo import CountryLookup
from services.risk.state import RiskState
from services.runtime import metrics
from services.runtime.access import current_caller
from services.runtime.errors import FailedPrecondition, NotFound, invalid
from services.runtime.validation import Violations

_OPERATOR_NAME = re.compile(r"^[\w.@+-]{1,64}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_PROVIDER = re.compile(r"^[a-z0-9_.-]{1,64}$")
_MCC = re.compile(r"^\d{4}$")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

# grpc ships no type information, so the context is untyped.
Context: TypeAlias = Any


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def verdict_to_proto(verdict: Verdict) -> risk_pb2.Verdict.ValueType:
    return risk_pb2.Verdict.Value(f"VERDICT_{verdict.name}")


def channel_name(channel: risk_pb2.TopUpChannel.ValueType) -> str:
    return risk_pb2.TopUpChannel.Name(channel).removeprefix("TOP_UP_CHANNEL_").lower()


def channel_value(name: str) -> risk_pb2.TopUpChannel.ValueType:
    return risk_pb2.TopUpChannel.Value(f"TOP_UP_CHANNEL_{name.upper()}")


def policy_to_proto(policy: Policy) -> risk_pb2.Policy:
    return risk_pb2.Policy(
        version=policy.version,
        blocked_countries=sorted(policy.blocked_countries),
        registration_suspended=policy.registration_suspended,
        external_login_suspended_providers=sorted(policy.external_login_suspended_providers),
        top_up_suspended_channels=[
            channel_value(name) for name in sorted(policy.top_up_suspended_channels)
        ],
        payments_suspended=policy.payments_suspended,
        wind_down=policy.wind_down,
        payment_fallback_limit=common_pb2.Money(
            amount_minor=policy.payment_fallback_limit_minor,
            currency=policy.payment_fallback_currency,
        ),
        updated_at=timestamp(policy.updated_at),
        suspended_partners=sorted(policy.suspended_partners),
    )


def page_of(check: Violations, page: common_pb2.PageRequest) -> tuple[int, int]:
    """(limit, offset) from a PageRequest; the page token is the offset of the next page."""
    size = page.page_size or DEFAULT_PAGE_SIZE
    check.require(0 < size <= MAX_PAGE_SIZE, "page.page_size", "must be between 0 and 500")
    offset = 0
    if page.page_token:
        if page.page_token.isdigit() and len(page.page_token) < 10:
            offset = int(page.page_token)
        else:
            check.add("page.page_token", "must be a next_page_token from a previous response")
    return size, offset


def next_token(rows: int, limit: int, offset: int) -> str:
    return str(offset + limit) if rows == limit else ""


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


def _reason_text(check: Violations, value: str) -> str:
    check.text("reason", value, max_length=1000, required=True)
    return value


class RiskApi(risk_pb2_grpc.RiskServiceServicer):
    def __init__(
        self,
        *,
        state: RiskState,
        pool: Any,
        decisions: storage.DecisionLog,
        countries: CountryLookup,
        stopping: Any,
    ) -> None:
        self._state = state
        self._pool = pool
        self._decisions = decisions
        self._country = countries
        self._stopping = stopping

    # ------------------------------------------------------------ decisions

    async def _decide(
        self,
        kind: str,
        result: Assessment,
        *,
        inputs: dict[str, Any],
        country: str,
        account_id: str,
        ip: str,
        now: datetime,
    ) -> risk_pb2.Decision:
        decision_id = uuid.uuid4()
        metrics.RISK_DECISIONS.labels(kind, result.verdict.name.lower()).inc()
        await self._decisions.add(
            storage.StoredDecision(
                decision_id=decision_id,
                kind=kind,
                verdict=result.verdict,
                score=result.score,
                reasons=tuple(result.reasons),
                inputs=inputs,
                country_code=country,
                account_id=account_id,
                ip=ip,
                decided_at=now,
            )
        )
        return risk_pb2.Decision(
            decision_id=str(decision_id),
            verdict=verdict_to_proto(result.verdict),
            score=result.score,
            reasons=[
                risk_pb2.Reason(
                    rule_id=r.rule_id, observed=r.observed, threshold=r.threshold, detail=r.detail
                )
                for r in result.reasons
            ],
            country_code=country,
        )

    async def AssessLogin(
        self, request: risk_pb2.AssessLoginRequest, context: Context
    ) -> risk_pb2.AssessLoginResponse:
        check = Violations()
        check.uuid("account_id", request.account_id, required=False)
        check.text("identifier_hash", request.identifier_hash, max_length=128, single_line=True)
        check.require(
            bool(request.account_id or request.identifier_hash),
            "identifier_hash",
            "is required when account_id is empty",
        )
        check.require(request.HasField("client"), "client", "is required")
        check.client("client", request.client)
        check.text("method", request.method, max_length=80, single_line=True, required=True)
        check.require(
            request.method in ("password", "passkey", "reset")
            or bool(re.match(r"^external:[a-z0-9_.-]{1,64}$", request.method)),
            "method",
            'must be "password", "passkey", "reset" or "external:<provider>"',
        )
        check.raise_if_any()
        now = datetime.now(UTC)
        ip = normalised(request.client.ip_address)
        country = self._country(ip)
        rules = self._state.rules
        windows = storage.LoginWindows(
            ip=storage.window_start(now, rules.window("login.ip_failures")),
            subnet=storage.window_start(now, rules.window("login.subnet_failures")),
            account=storage.window_start(now, rules.window("login.account_failures")),
            distinct=storage.window_start(now, rules.window("login.ip_distinct_accounts")),
            global_failures=storage.window_start(now, rules.window("login.global_failures")),
            unknown_share=storage.window_start(now, rules.window("login.unknown_identifier_share")),
            bucket=storage.bucket_of(now),
        )
        signals = await storage.login_signals(
            self._pool,
            ip=ip,
            subnet=subnet_of(ip),
            account_id=request.account_id,
            identifier=request.identifier_hash or request.account_id,
            unknown=not request.account_id,
            windows=windows,
        )
        facts = assess.LoginFacts(
            account_known=bool(request.account_id),
            known_device=request.known_device,
            method=request.method,
            country=country,
            now=now,
        )
        result = assess.assess_login(facts, signals, rules, self._state.policy)
        inputs = {
            "account_id": request.account_id,
            "identifier_hash": request.identifier_hash,
            "ip_address": ip,
            "device_id": request.client.device_id,
            "known_device": request.known_device,
            "method": request.method,
            "policy_version": self._state.policy.version,
            "signals": {
                "ip_failures": signals.ip_failures,
                "subnet_failures": signals.subnet_failures,
                "account_failures": signals.account_failures,
                "global_failures": signals.global_failures,
                "global_attempts": signals.global_attempts,
                "global_unknown_attempts": signals.global_unknown_attempts,
                "ip_distinct_identifiers": signals.ip_distinct_identifiers,
            },
        }
        decision = await self._decide(
            "login",
            result,
            inputs=inputs,
            country=country,
            account_id=request.account_id,
            ip=ip,
            now=now,
        )
        return risk_pb2.AssessLoginResponse(decision=decision)

    async def AssessRegistration(
        self, request: risk_pb2.AssessRegistrationRequest, context: Context
    ) -> risk_pb2.AssessRegistrationResponse:
        check = Violations()
        check.text(
            "email_domain", request.email_domain, max_length=253, single_line=True, required=True
        )
        check.require(request.HasField("client"), "client", "is required")
        check.client("client", request.client)
        check.raise_if_any()
        now = datetime.now(UTC)
        ip = normalised(request.client.ip_address)
        country = self._country(ip)
        rules = self._state.rules
        earlier = await storage.count_and_read(
            self._pool,
            dimension="registration_ip",
            key=ip,
            bucket=storage.bucket_of(now),
            since_bucket=storage.window_start(now, rules.window("registration.ip_velocity")),
        )
        result = assess.assess_registration(country, earlier, rules, self._state.policy)
        inputs = {
            "email_domain": request.email_domain.lower(),
            "ip_address": ip,
            "device_id": request.client.device_id,
            "policy_version": self._state.policy.version,
            "signals": {"ip_registrations": earlier},
        }
        decision = await self._decide(
            "registration", result, inputs=inputs, country=country, account_id="", ip=ip, now=now
        )
        return risk_pb2.AssessRegistrationResponse(decision=decision)

    async def AssessTopUp(
        self, request: risk_pb2.AssessTopUpRequest, context: Context
    ) -> risk_pb2.AssessTopUpResponse:
        check = Violations()
        check.uuid("wallet_id", request.wallet_id)
        check.text("payer_id", request.payer_id, max_length=128, single_line=True, required=True)
        amount = check.money("amount", request.amount if request.HasField("amount") else None)
        check.require(
            request.channel != risk_pb2.TOP_UP_CHANNEL_UNSPECIFIED
            and request.channel in risk_pb2.TopUpChannel.values(),
            "channel",
            "must be a top-up channel",
        )
        check.text("funding_source_id", request.funding_source_id, max_length=128, single_line=True)
        check.text("session_id", request.session_id, max_length=128, single_line=True)
        if request.HasField("client"):
            check.client("client", request.client, required=False)
        check.raise_if_any()
        now = datetime.now(UTC)
        ip = normalised(request.client.ip_address) if request.client.ip_address else ""
        country = self._country(ip) if ip else ""
        rules = self._state.rules
        earlier, changed_at = await storage.top_up_signals(
            self._pool,
            wallet_id=request.wallet_id,
            session_id=request.session_id,
            bucket=storage.bucket_of(now),
            since_bucket=storage.window_start(now, rules.window("top_up.velocity")),
        )
        facts = assess.TopUpFacts(
            amount_minor=amount,
            channel=channel_name(request.channel),
            new_funding_source=request.new_funding_source,
            country=country,
            now=now,
        )
        result = assess.assess_top_up(facts, earlier, changed_at, rules, self._state.policy)
        inputs = {
            "wallet_id": request.wallet_id,
            "payer_id": request.payer_id,
            "amount_minor": amount,
            "currency": request.amount.currency,
            "channel": facts.channel,
            "funding_source_id": request.funding_source_id,
            "new_funding_source": request.new_funding_source,
            "session_id": request.session_id,
            "ip_address": ip,
            "device_id": request.client.device_id,
            "policy_version": self._state.policy.version,
            "signals": {"recent_top_ups": earlier},
        }
        decision = await self._decide(
            "top_up", result, inputs=inputs, country=country, account_id="", ip=ip, now=now
        )
        return risk_pb2.AssessTopUpResponse(decision=decision)

    async def AssessPayment(
        self, request: risk_pb2.AssessPaymentRequest, context: Context
    ) -> risk_pb2.AssessPaymentResponse:
        check = Violations()
        check.uuid("wallet_id", request.wallet_id)
        check.text("payer_id", request.payer_id, max_length=128, single_line=True, required=True)
        amount = check.money("amount", request.amount if request.HasField("amount") else None)
        check.text(
            "merchant_id", request.merchant_id, max_length=128, single_line=True, required=True
        )
        check.require(
            bool(_MCC.match(request.merchant_category)),
            "merchant_category",
            "must be a 4-digit ISO 18245 code",
        )
        check.text("store_id", request.store_id, max_length=128, single_line=True)
        for index, category in enumerate(request.basket_categories):
            check.require(
                category != risk_pb2.GOODS_CATEGORY_UNSPECIFIED
                and category in risk_pb2.GoodsCategory.values(),
                f"basket_categories[{index}]",
                "must be a goods category",
            )
        check.text("device_id", request.device_id, max_length=128, single_line=True)
        check.text("session_id", request.session_id, max_length=128, single_line=True)
        check.raise_if_any()
        now = datetime.now(UTC)
        rules = self._state.rules
        basket = sorted(
            {
                risk_pb2.GoodsCategory.Name(c).removeprefix("GOODS_CATEGORY_").lower()
                for c in request.basket_categories
            }
        )
        earlier, top_up_at, from_new_device = await storage.payment_signals(
            self._pool,
            wallet_id=request.wallet_id,
            bucket=storage.bucket_of(now),
            since_bucket=storage.window_start(now, rules.window("payment.velocity")),
        )
        facts = assess.PaymentFacts(
            amount_minor=amount, merchant_category=request.merchant_category, basket=basket, now=now
        )
        result = assess.assess_payment(
            facts, earlier, top_up_at, from_new_device, rules, self._state.policy
        )
        inputs = {
            "wallet_id": request.wallet_id,
            "payer_id": request.payer_id,
            "amount_minor": amount,
            "currency": request.amount.currency,
            "merchant_id": request.merchant_id,
            "merchant_category": request.merchant_category,
            "store_id": request.store_id,
            "basket": basket,
            "device_id": request.device_id,
            "session_id": request.session_id,
            "policy_version": self._state.policy.version,
            "signals": {
                "recent_payments": earlier,
                "last_top_up_from_new_device": from_new_device,
            },
        }
        decision = await self._decide(
            "payment", result, inputs=inputs, country="", account_id="", ip="", now=now
        )
        return risk_pb2.AssessPaymentResponse(decision=decision)

    async def RecordOutcome(
        self, request: risk_pb2.RecordOutcomeRequest, context: Context
    ) -> risk_pb2.RecordOutcomeResponse:
        check = Violations()
        check.require(
            request.outcome != risk_pb2.OUTCOME_UNSPECIFIED
            and request.outcome in risk_pb2.Outcome.values(),
            "outcome",
            "must be an outcome",
        )
        check.uuid("decision_id", request.decision_id, required=False)
        check.uuid("account_id", request.account_id, required=False)
        check.uuid("wallet_id", request.wallet_id, required=False)
        for name in ("session_id", "movement_id", "identifier_hash", "payer_id"):
            check.text(name, getattr(request, name), max_length=128, single_line=True)
        if request.HasField("client"):
            check.client("client", request.client, required=False)
        amount = 0
        if request.HasField("amount"):
            amount = check.money("amount", request.amount)
        outcome = (
            risk_pb2.Outcome.Name(request.outcome).removeprefix("OUTCOME_").lower()
            if request.outcome in risk_pb2.Outcome.values()
            else ""
        )
        if outcome in ("top_up_completed", "payment_captured", "payment_refunded"):
            check.require(bool(request.movement_id), "movement_id", "is required for money")
            check.require(bool(request.wallet_id), "wallet_id", "is required for money")
            check.require(request.HasField("amount"), "amount", "is required for money")
        if outcome in ("password_wrong", "second_factor_failed", "login_succeeded"):
            check.require(
                bool(request.client.ip_address), "client.ip_address", "is required for sign-ins"
            )
        if outcome in ("login_succeeded", "credential_changed", "password_ok"):
            check.require(bool(request.account_id), "account_id", "is required")
        check.raise_if_any()
        ip = normalised(request.client.ip_address) if request.client.ip_address else ""
        occurred_at = (
            request.occurred_at.ToDatetime(tzinfo=UTC)
            if request.HasField("occurred_at")
            else datetime.now(UTC)
        )
        await storage.record_outcome(
            self._pool,
            storage.OutcomeEvent(
                outcome=outcome,
                decision_id=request.decision_id,
                account_id=request.account_id,
                wallet_id=request.wallet_id,
                payer_id=request.payer_id,
                session_id=request.session_id,
                ip=ip,
                subnet=subnet_of(ip) if ip else "",
                device_id=request.client.device_id,
                country=self._country(ip) if ip else "",
                amount_minor=amount,
                currency=request.amount.currency,
                movement_id=request.movement_id,
                identifier_hash=request.identifier_hash,
                occurred_at=occurred_at,
            ),
        )
        return risk_pb2.RecordOutcomeResponse()

    async def ListDecisions(
        self, request: risk_pb2.ListDecisionsRequest, context: Context
    ) -> risk_pb2.ListDecisionsResponse:
        check = Violations()
        check.uuid("account_id", request.account_id, required=False)
        check.ip_address("ip_address", request.ip_address, required=False)
        limit, offset = page_of(check, request.page)
        check.raise_if_any()
        # This replica's queued decisions are stored first, so a decision just
        # returned to a caller is always listed.
        await self._decisions.flush()
        rows = await storage.list_decisions(
            self._pool,
            account_id=request.account_id,
            ip=normalised(request.ip_address) if request.ip_address else "",
            since=request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else None,
            limit=limit,
            offset=offset,
        )
        return risk_pb2.ListDecisionsResponse(
            decisions=[
                risk_pb2.DecisionRecord(
                    decision=risk_pb2.Decision(
                        decision_id=str(row["decision_id"]),
                        verdict=verdict_to_proto(Verdict[row["verdict"]]),
                        score=row["score"],
                        reasons=[risk_pb2.Reason(**reason) for reason in row["reasons"]],
                        country_code=row["country_code"],
                    ),
                    kind=row["kind"],
                    inputs_json=_json(row["inputs"]),
                    decided_at=timestamp(row["decided_at"]),
                )
                for row in rows
            ],
            next_page_token=next_token(len(rows), limit, offset),
        )

    # ------------------------------------------------------------ rules

    async def ListRules(
        self, request: risk_pb2.ListRulesRequest, context: Context
    ) -> risk_pb2.ListRulesResponse:
        await self._state.reload_rules()
        return risk_pb2.ListRulesResponse(
            rules=[_rule_to_proto(rule) for rule in self._state.rules.rules.values()]
        )

    async def UpdateRule(
        self, request: risk_pb2.UpdateRuleRequest, context: Context
    ) -> risk_pb2.UpdateRuleResponse:
        check = Violations()
        reason = _reason_text(check, request.reason)
        await self._state.reload_rules()
        rule = self._state.rules.rules.get(request.rule_id)
        if rule is None:
            check.add("rule_id", "must name a rule (see ListRules)")
        check.require(request.verdict in risk_pb2.Verdict.values(), "verdict", "must be a verdict")
        for name, value in request.thresholds.items():
            if rule is not None and name not in rule.thresholds:
                check.add(f"thresholds[{name}]", "is not a threshold of this rule")
            elif not (value >= 0 and value < 1e12):
                check.add(f"thresholds[{name}]", "must be a number from 0 to 1e12")
        if request.HasField("auto_action") and request.auto_action:
            check.require(
                request.rule_id.startswith("alert."),
                "auto_action",
                "only alert rules flip switches",
            )
            try:
                parse_switch(request.auto_action)
            except ValueError:
                check.add("auto_action", "must name a switch, for example top_up_channel:card")
        check.raise_if_any()
        assert rule is not None
        verdict = (
            Verdict[risk_pb2.Verdict.Name(request.verdict).removeprefix("VERDICT_")]
            if request.verdict != risk_pb2.VERDICT_UNSPECIFIED
            else None
        )
        changed = rule.changed(
            enabled=request.enabled if request.HasField("enabled") else None,
            thresholds=dict(request.thresholds),
            verdict=verdict,
        )
        if request.HasField("auto_action"):
            changed = dataclasses.replace(changed, auto_action=request.auto_action)
        change: dict[str, Any] = {"thresholds": dict(request.thresholds)}
        if request.HasField("auto_action"):
            change["auto_action"] = request.auto_action
        if request.HasField("enabled"):
            change["enabled"] = request.enabled
        if verdict is not None:
            change["verdict"] = verdict.name
        await storage.save_rule(
            self._pool, changed, actor=actor_of(context), reason=reason, change=change
        )
        await self._state.reload_rules()
        return risk_pb2.UpdateRuleResponse(rule=_rule_to_proto(self._state.rules[rule.rule_id]))

    # ------------------------------------------------------------ policies

    async def GetPolicies(
        self, request: risk_pb2.GetPoliciesRequest, context: Context
    ) -> risk_pb2.GetPoliciesResponse:
        policy, _ = await storage.load_policy(self._pool)
        await self._state.publish_policy(policy)
        return risk_pb2.GetPoliciesResponse(policy=policy_to_proto(policy))

    async def SetPolicy(
        self, request: risk_pb2.SetPolicyRequest, context: Context
    ) -> risk_pb2.SetPolicyResponse:
        check = Violations()
        reason = _reason_text(check, request.reason)
        change = _policy_change(check, request)
        check.raise_if_any()
        assert change is not None
        policy = await storage.change_policy(
            self._pool, change, actor=actor_of(context), reason=reason
        )
        await self._state.publish_policy(policy)
        return risk_pb2.SetPolicyResponse(policy=policy_to_proto(policy))

    async def WatchPolicies(
        self, request: risk_pb2.WatchPoliciesRequest, context: Context
    ) -> AsyncIterator[risk_pb2.WatchPoliciesResponse]:
        check = Violations()
        check.text("subscriber", request.subscriber, max_length=200, single_line=True)
        check.raise_if_any()
        # Headers at once: a follower counts itself subscribed when they arrive.
        await context.send_initial_metadata(())
        async for policy in self._state.watch(self._stopping):
            yield risk_pb2.WatchPoliciesResponse(policy=policy_to_proto(policy))

    async def ListPolicyChanges(
        self, request: risk_pb2.ListPolicyChangesRequest, context: Context
    ) -> risk_pb2.ListPolicyChangesResponse:
        check = Violations()
        limit, offset = page_of(check, request.page)
        check.raise_if_any()
        rows = await storage.list_policy_changes(self._pool, limit=limit, offset=offset)
        return risk_pb2.ListPolicyChangesResponse(
            changes=[
                risk_pb2.PolicyChange(
                    change_id=str(row["change_id"]),
                    actor=row["actor"],
                    reason=row["reason"],
                    change_json=_json(row["change"]),
                    changed_at=timestamp(row["changed_at"]),
                    policy_version=row["policy_version"],
                )
                for row in rows
            ],
            next_page_token=next_token(len(rows), limit, offset),
        )

    # ------------------------------------------------------------ alerts and cases

    async def ListAlerts(
        self, request: risk_pb2.ListAlertsRequest, context: Context
    ) -> risk_pb2.ListAlertsResponse:
        check = Violations()
        check.require(
            request.status in risk_pb2.AlertStatus.values(), "status", "must be an alert status"
        )
        limit, offset = page_of(check, request.page)
        check.raise_if_any()
        status = (
            risk_pb2.AlertStatus.Name(request.status).removeprefix("ALERT_STATUS_").lower()
            if request.status != risk_pb2.ALERT_STATUS_UNSPECIFIED
            else ""
        )
        rows = await storage.list_alerts(self._pool, status=status, limit=limit, offset=offset)
        return risk_pb2.ListAlertsResponse(
            alerts=[_alert_to_proto(row) for row in rows],
            next_page_token=next_token(len(rows), limit, offset),
        )

    async def UpdateAlert(
        self, request: risk_pb2.UpdateAlertRequest, context: Context
    ) -> risk_pb2.UpdateAlertResponse:
        check = Violations()
        alert_id = check.uuid("alert_id", request.alert_id)
        check.require(
            request.status in (risk_pb2.ALERT_STATUS_ACKNOWLEDGED, risk_pb2.ALERT_STATUS_RESOLVED),
            "status",
            "must be ACKNOWLEDGED or RESOLVED",
        )
        check.text("note", request.note, max_length=10_000)
        check.raise_if_any()
        assert alert_id is not None
        row = await storage.update_alert(
            self._pool,
            alert_id,
            status=risk_pb2.AlertStatus.Name(request.status).removeprefix("ALERT_STATUS_").lower(),
            note=f"{actor_of(context)}: {request.note}" if request.note else None,
        )
        if row is None:
            raise NotFound("ALERT_NOT_FOUND", "no such alert")
        return risk_pb2.UpdateAlertResponse(alert=_alert_to_proto(row))

    async def OpenCase(
        self, request: risk_pb2.OpenCaseRequest, context: Context
    ) -> risk_pb2.OpenCaseResponse:
        check = Violations()
        check.require(
            request.source != risk_pb2.CASE_SOURCE_UNSPECIFIED
            and request.source in risk_pb2.CaseSource.values(),
            "source",
            "must be a case source",
        )
        check.uuid("account_id", request.account_id, required=False)
        check.uuid("wallet_id", request.wallet_id, required=False)
        check.uuid("alert_id", request.alert_id, required=False)
        check.text("movement_id", request.movement_id, max_length=128, single_line=True)
        check.text("description", request.description, max_length=10_000)
        check.idempotency_key("idempotency_key", request.idempotency_key)
        if request.source == risk_pb2.CASE_SOURCE_ALERT:
            check.require(bool(request.alert_id), "alert_id", "is required for alert cases")
        check.raise_if_any()
        row = await storage.open_case(
            self._pool,
            # Callers' keys live in one space per caller, so two services cannot collide.
            idempotency_key=f"{current_caller()}:{request.idempotency_key}",
            source=risk_pb2.CaseSource.Name(request.source).removeprefix("CASE_SOURCE_").lower(),
            account_id=request.account_id,
            wallet_id=request.wallet_id,
            alert_id=request.alert_id,
            movement_id=request.movement_id,
            description=request.description,
        )
        return risk_pb2.OpenCaseResponse(case=_case_to_proto(row))

    async def GetCase(
        self, request: risk_pb2.GetCaseRequest, context: Context
    ) -> risk_pb2.GetCaseResponse:
        return risk_pb2.GetCaseResponse(case=_case_to_proto(await self._case(request.case_id)))

    async def _case(self, case_id: str) -> Any:
        check = Violations()
        parsed = check.uuid("case_id", case_id)
        check.raise_if_any()
        assert parsed is not None
        row = await storage.get_case(self._pool, parsed)
        if row is None:
            raise NotFound("CASE_NOT_FOUND", "no such case")
        return row

    async def ListCases(
        self, request: risk_pb2.ListCasesRequest, context: Context
    ) -> risk_pb2.ListCasesResponse:
        check = Violations()
        check.require(
            request.status in risk_pb2.CaseStatus.values(), "status", "must be a case status"
        )
        limit, offset = page_of(check, request.page)
        check.raise_if_any()
        status = (
            _case_status(request.status)
            if request.status != risk_pb2.CASE_STATUS_UNSPECIFIED
            else ""
        )
        rows = await storage.list_cases(self._pool, status=status, limit=limit, offset=offset)
        return risk_pb2.ListCasesResponse(
            cases=[_case_to_proto(row) for row in rows],
            next_page_token=next_token(len(rows), limit, offset),
        )

    async def UpdateCase(
        self, request: risk_pb2.UpdateCaseRequest, context: Context
    ) -> risk_pb2.UpdateCaseResponse:
        check = Violations()
        case_id = check.uuid("case_id", request.case_id)
        check.require(
            request.status in risk_pb2.CaseStatus.values()
            and request.status != risk_pb2.CASE_STATUS_CONFIRMED_FRAUD,
            "status",
            "must be a case status other than CONFIRMED_FRAUD (use ConfirmFraud)",
        )
        if request.HasField("assignee"):
            check.text("assignee", request.assignee, max_length=200, single_line=True)
        if request.HasField("note"):
            check.text("note", request.note, max_length=10_000, required=True)
        check.raise_if_any()
        assert case_id is not None
        note = f"{actor_of(context)}: {request.note}" if request.HasField("note") else None
        row = await storage.update_case(
            self._pool,
            case_id,
            status=_case_status(request.status)
            if request.status != risk_pb2.CASE_STATUS_UNSPECIFIED
            else None,
            assignee=request.assignee if request.HasField("assignee") else None,
            note=note,
        )
        if row is None:
            raise NotFound("CASE_NOT_FOUND", "no such case")
        return risk_pb2.UpdateCaseResponse(case=_case_to_proto(row))

    async def ConfirmFraud(
        self, request: risk_pb2.ConfirmFraudRequest, context: Context
    ) -> risk_pb2.ConfirmFraudResponse:
        check = Violations()
        case_id = check.uuid("case_id", request.case_id)
        reason = _reason_text(check, request.reason)
        check.require(request.HasField("indicators"), "indicators", "is required")
        indicators = _indicators(check, "indicators", request.indicators)
        check.raise_if_any()
        assert case_id is not None
        # An open-ended window is closed now, so the case's victim query gives the
        # same answer on every later run.
        if indicators["window_end"] is None:
            indicators["window_end"] = datetime.now(UTC).isoformat()
        row = await storage.update_case(
            self._pool,
            case_id,
            status="confirmed_fraud",
            assignee=None,
            note=f"{actor_of(context)}: fraud confirmed: {reason}",
            indicators=indicators,
        )
        if row is None:
            raise NotFound("CASE_NOT_FOUND", "no such case")
        return risk_pb2.ConfirmFraudResponse(case=_case_to_proto(row))

    async def FindAffectedAccounts(
        self, request: risk_pb2.FindAffectedAccountsRequest, context: Context
    ) -> risk_pb2.FindAffectedAccountsResponse:
        check = Violations()
        which = request.WhichOneof("query")
        check.require(which is not None, "query", "a case_id or indicators is required")
        indicators: dict[str, Any] = {}
        if which == "indicators":
            indicators = _indicators(check, "indicators", request.indicators)
        check.raise_if_any()
        if which == "case_id":
            row = await self._case(request.case_id)
            if row["indicators"] is None:
                raise FailedPrecondition(
                    "CASE_NOT_CONFIRMED", "confirm the case with its indicators first"
                )
            indicators = row["indicators"]
        end = (
            datetime.fromisoformat(indicators["window_end"])
            if indicators["window_end"]
            else datetime.now(UTC)
        )
        rows = await storage.find_affected(
            self._pool,
            ips=indicators["ip_addresses"],
            subnets=indicators["subnets"],
            devices=indicators["device_ids"],
            start=datetime.fromisoformat(indicators["window_start"]),
            end=end,
        )
        accounts = victims.affected_accounts(
            (
                row.account_id,
                row.session_id,
                None
                if row.movement_id is None
                else victims.Movement(
                    movement_id=row.movement_id,
                    wallet_id=row.wallet_id or "",
                    kind=row.kind or "",
                    amount_minor=row.amount_minor or 0,
                    currency=row.currency or "",
                    occurred_at=row.occurred_at or end,
                    session_id=row.session_id,
                ),
            )
            for row in rows
        )
        currency = DEFAULT_CURRENCY
        return risk_pb2.FindAffectedAccountsResponse(
            accounts=[
                risk_pb2.AffectedAccount(
                    account_id=account.account_id,
                    session_ids=account.session_ids,
                    movements=[
                        risk_pb2.AffectedMovement(
                            movement_id=m.movement_id,
                            wallet_id=m.wallet_id,
                            kind=m.kind,
                            amount=common_pb2.Money(
                                amount_minor=m.amount_minor, currency=m.currency
                            ),
                            occurred_at=timestamp(m.occurred_at),
                            session_id=m.session_id,
                        )
                        for m in account.movements
                    ],
                    total=common_pb2.Money(amount_minor=account.total_minor, currency=currency),
                )
                for account in accounts
            ],
            total=common_pb2.Money(
                amount_minor=sum(a.total_minor for a in accounts), currency=currency
            ),
        )


def _alert_to_proto(row: Any) -> risk_pb2.Alert:
    return risk_pb2.Alert(
        alert_id=str(row["alert_id"]),
        rule_id=row["rule_id"],
        status=risk_pb2.AlertStatus.Value(f"ALERT_STATUS_{row['status'].upper()}"),
        raised_at=timestamp(row["raised_at"]),
        evidence_json=_json(row["evidence"]),
        auto_action_taken=row["auto_action_taken"],
    )


def _case_status(status: risk_pb2.CaseStatus.ValueType) -> str:
    return risk_pb2.CaseStatus.Name(status).removeprefix("CASE_STATUS_").lower()


def _indicators(check: Violations, field: str, given: risk_pb2.Indicators) -> dict[str, Any]:
    """Validated indicators in their stored form; IPs in one spelling, subnets as networks."""
    ips = []
    for index, ip in enumerate(given.ip_addresses):
        check.ip_address(f"{field}.ip_addresses[{index}]", ip)
        with contextlib.suppress(ValueError):
            ips.append(normalised(ip))
    subnets = []
    for index, subnet in enumerate(given.subnets):
        try:
            subnets.append(str(ipaddress.ip_network(subnet, strict=False)))
        except ValueError:
            check.add(f"{field}.subnets[{index}]", "must be a subnet in CIDR form")
    for index, device in enumerate(given.device_ids):
        check.text(
            f"{field}.device_ids[{index}]", device, max_length=128, single_line=True, required=True
        )
    check.require(
        bool(ips or subnets or given.device_ids),
        field,
        "at least one IP, subnet or device is required",
    )
    check.require(given.HasField("window_start"), f"{field}.window_start", "is required")
    start = given.window_start.ToDatetime(tzinfo=UTC)
    end = given.window_end.ToDatetime(tzinfo=UTC) if given.HasField("window_end") else None
    if end is not None:
        check.require(end > start, f"{field}.window_end", "must be after window_start")
    return {
        "ip_addresses": sorted(set(ips)),
        "subnets": sorted(set(subnets)),
        "device_ids": sorted(set(given.device_ids)),
        "window_start": start.isoformat(),
        "window_end": end.isoformat() if end is not None else None,
    }


def _case_to_proto(row: Any) -> risk_pb2.Case:
    indicators = None
    if row["indicators"] is not None:
        stored = row["indicators"]
        indicators = risk_pb2.Indicators(
            ip_addresses=stored["ip_addresses"],
            subnets=stored["subnets"],
            device_ids=stored["device_ids"],
            window_start=timestamp(datetime.fromisoformat(stored["window_start"])),
            window_end=timestamp(datetime.fromisoformat(stored["window_end"]))
            if stored["window_end"]
            else None,
        )
    return risk_pb2.Case(
        case_id=str(row["case_id"]),
        status=risk_pb2.CaseStatus.Value(f"CASE_STATUS_{row['status'].upper()}"),
        source=risk_pb2.CaseSource.Value(f"CASE_SOURCE_{row['source'].upper()}"),
        account_id=row["account_id"],
        wallet_id=row["wallet_id"],
        alert_id=row["alert_id"],
        assignee=row["assignee"],
        notes=list(row["notes"]),
        indicators=indicators,
        opened_at=timestamp(row["opened_at"]),
        updated_at=timestamp(row["updated_at"]),
        movement_id=row["movement_id"],
    )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _rule_to_proto(rule: Any) -> risk_pb2.Rule:
    return risk_pb2.Rule(
        rule_id=rule.rule_id,
        description=rule.description,
        enabled=rule.enabled,
        thresholds=dict(rule.thresholds),
        verdict=verdict_to_proto(rule.verdict),
        auto_action=rule.auto_action,
    )


def _policy_change(check: Violations, request: risk_pb2.SetPolicyRequest) -> PolicyChange | None:
    which = request.WhichOneof("change")
    if which is None:
        check.add("change", "exactly one change is required")
        return None
    if which == "country":
        code = request.country.country_code
        check.require(
            bool(_COUNTRY.match(code)),
            "country.country_code",
            "must be ISO 3166-1 alpha-2, upper case",
        )
        return PolicyChange(switch="country", key=code, value=request.country.blocked)
    if which == "external_login":
        provider = request.external_login.provider
        check.require(
            bool(_PROVIDER.match(provider)),
            "external_login.provider",
            "must be 1 to 64 of a-z 0-9 _ . -",
        )
        return PolicyChange(
            switch="external_login", key=provider, value=request.external_login.suspended
        )
    if which == "partner":
        partner_id = request.partner.partner_id
        check.require(
            bool(_PROVIDER.match(partner_id)),
            "partner.partner_id",
            "must be 1 to 64 of a-z 0-9 _ . -",
        )
        return PolicyChange(switch="partner", key=partner_id, value=request.partner.suspended)
    if which == "top_up_channel":
        channel = request.top_up_channel.channel
        valid = (
            channel != risk_pb2.TOP_UP_CHANNEL_UNSPECIFIED
            and channel in risk_pb2.TopUpChannel.values()
        )
        check.require(valid, "top_up_channel.channel", "must be a top-up channel")
        if not valid:
            return None
        return PolicyChange(
            switch="top_up_channel",
            key=channel_name(channel),
            value=request.top_up_channel.suspended,
        )
    if which == "payment_fallback_limit":
        amount = check.money(
            "payment_fallback_limit", request.payment_fallback_limit, positive=False
        )
        return PolicyChange(
            switch="payment_fallback_limit",
            value=amount,
            currency=request.payment_fallback_limit.currency,
        )
    return PolicyChange(switch=which, value=bool(getattr(request, which)))
