"""Between risk's protos and its commands and domain types, with the request
format checks (checks that need stored state live in the use cases)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

from services.risk.domain.alerts import Alert
from services.risk.domain.cases import Case, Indicators
from services.risk.domain.decisions import StoredDecision
from services.risk.domain.network import BROADEST_PREFIX, network_of, normalised
from services.risk.domain.outcomes import (
    ACCOUNT_OUTCOMES,
    MONEY_OUTCOMES,
    SIGN_IN_OUTCOMES,
    OutcomeEvent,
)
from services.risk.domain.policy import (
    DEFAULT_CURRENCY,
    Policy,
    PolicyChange,
    PolicyChangeRecord,
    parse_switch,
)
from services.risk.domain.rules import Rule, Verdict
from services.risk.domain.victims import AffectedAccount
from services.risk.use_cases.assessments import (
    LoginCommand,
    PaymentCommand,
    RegistrationCommand,
    TopUpCommand,
)
from services.risk.use_cases.cases import OpenCase
from services.risk.use_cases.policies import RuleUpdate
from services.runtime import paging
from services.runtime.convert import moment, moment_or_none, timestamp
from services.runtime.errors import InvalidArgument
from services.runtime.validation import Violations

_COUNTRY = re.compile(r"^[A-Z]{2}$")
_PROVIDER = re.compile(r"^[a-z0-9_.-]{1,64}$")
DEFAULT_PAGE_SIZE = 50

# The sort key of a listed row: its time and its ID, newest first.
After = tuple[datetime, uuid.UUID]


# ---------------------------------------------------------------- enums


def verdict_to_proto(verdict: Verdict) -> risk_pb2.Verdict.ValueType:
    return risk_pb2.Verdict.Value(f"VERDICT_{verdict.name}")


def channel_name(channel: risk_pb2.TopUpChannel.ValueType) -> str:
    return risk_pb2.TopUpChannel.Name(channel).removeprefix("TOP_UP_CHANNEL_").lower()


def channel_value(name: str) -> risk_pb2.TopUpChannel.ValueType:
    return risk_pb2.TopUpChannel.Value(f"TOP_UP_CHANNEL_{name.upper()}")


def _known(value: int, enum: Any) -> bool:
    """Set, and one of the enum's values."""
    return value != 0 and value in enum.values()


def alert_status(status: risk_pb2.AlertStatus.ValueType) -> str:
    """The stored name of a status; "" for unspecified (any)."""
    if status == risk_pb2.ALERT_STATUS_UNSPECIFIED:
        return ""
    return risk_pb2.AlertStatus.Name(status).removeprefix("ALERT_STATUS_").lower()


def case_status(status: risk_pb2.CaseStatus.ValueType) -> str:
    """The stored name of a status; "" for unspecified (any)."""
    if status == risk_pb2.CASE_STATUS_UNSPECIFIED:
        return ""
    return risk_pb2.CaseStatus.Name(status).removeprefix("CASE_STATUS_").lower()


# ---------------------------------------------------------------- pages


def page_of(page: common_pb2.PageRequest) -> tuple[int, After | None]:
    """(limit, the sort key the page starts after); the size's range is the proto's."""
    after = None
    if page.page_token:
        try:
            when, key = paging.decode(page.page_token, field="page.page_token", parts=2)
            after = (datetime.fromisoformat(when), uuid.UUID(key))
        except (InvalidArgument, ValueError):
            raise InvalidArgument(
                [("page.page_token", "must be a next_page_token from a previous response")]
            ) from None
    return page.page_size or DEFAULT_PAGE_SIZE, after


def next_token(keys: Sequence[After], limit: int) -> str:
    """The token of the next page when this one is full, else ""."""
    if len(keys) < limit or not keys:
        return ""
    when, key = keys[-1]
    return paging.encode(when.isoformat(), str(key))


# ---------------------------------------------------------------- requests
#
# The protos declare each field's format and the runtime checks it before any
# handler. What remains here is what a field rule cannot say: text that is only
# blanks, fields required by another field's value, a client context required by
# one RPC and optional in another, and values parsed into domain types.


def _present(check: Violations, field: str, value: str) -> None:
    check.require(bool(value.strip()), field, "is required")


def _amount(check: Violations, field: str, request: Any) -> int:
    """The amount of a Money field the RPC requires (its format is the proto's)."""
    if not request.HasField(field):
        check.add(f"{field}.currency", "is required")
        return 0
    return int(getattr(request, field).amount_minor)


def _ip(value: str) -> str:
    return normalised(value) if value else ""


def login_command(request: risk_pb2.AssessLoginRequest) -> LoginCommand:
    check = Violations()
    check.require(
        bool(request.account_id or request.identifier_hash),
        "identifier_hash",
        "is required when account_id is empty",
    )
    check.client("client", request.client)
    check.raise_if_any()
    return LoginCommand(
        ip=normalised(request.client.ip_address),
        account_id=request.account_id,
        device_id=request.client.device_id,
        identifier_hash=request.identifier_hash,
        known_device=request.known_device,
        method=request.method,
    )


def registration_command(request: risk_pb2.AssessRegistrationRequest) -> RegistrationCommand:
    check = Violations()
    _present(check, "email_domain", request.email_domain)
    check.client("client", request.client)
    check.raise_if_any()
    return RegistrationCommand(
        ip=normalised(request.client.ip_address),
        device_id=request.client.device_id,
        email_domain=request.email_domain,
    )


def top_up_command(request: risk_pb2.AssessTopUpRequest) -> TopUpCommand:
    check = Violations()
    _present(check, "payer_id", request.payer_id)
    amount = _amount(check, "amount", request)
    if request.HasField("client"):
        check.client("client", request.client, required=False)
    check.raise_if_any()
    return TopUpCommand(
        ip=_ip(request.client.ip_address),
        device_id=request.client.device_id,
        wallet_id=request.wallet_id,
        payer_id=request.payer_id,
        amount_minor=amount,
        currency=request.amount.currency,
        channel=channel_name(request.channel),
        funding_source_id=request.funding_source_id,
        new_funding_source=request.new_funding_source,
        session_id=request.session_id,
    )


def payment_command(request: risk_pb2.AssessPaymentRequest) -> PaymentCommand:
    check = Violations()
    _present(check, "payer_id", request.payer_id)
    amount = _amount(check, "amount", request)
    _present(check, "merchant_id", request.merchant_id)
    check.raise_if_any()
    basket = {
        risk_pb2.GoodsCategory.Name(c).removeprefix("GOODS_CATEGORY_").lower()
        for c in request.basket_categories
    }
    return PaymentCommand(
        device_id=request.device_id,
        wallet_id=request.wallet_id,
        payer_id=request.payer_id,
        amount_minor=amount,
        currency=request.amount.currency,
        merchant_id=request.merchant_id,
        merchant_category=request.merchant_category,
        store_id=request.store_id,
        basket=tuple(sorted(basket)),
        session_id=request.session_id,
    )


def outcome_event(request: risk_pb2.RecordOutcomeRequest, now: datetime) -> OutcomeEvent:
    check = Violations()
    if request.HasField("client"):
        check.client("client", request.client, required=False)
    outcome = risk_pb2.Outcome.Name(request.outcome).removeprefix("OUTCOME_").lower()
    if outcome in MONEY_OUTCOMES:
        check.require(bool(request.movement_id), "movement_id", "is required for money")
        check.require(bool(request.wallet_id), "wallet_id", "is required for money")
        check.require(request.HasField("amount"), "amount", "is required for money")
    if outcome in SIGN_IN_OUTCOMES:
        check.require(
            bool(request.client.ip_address), "client.ip_address", "is required for sign-ins"
        )
    if outcome in ACCOUNT_OUTCOMES:
        check.require(bool(request.account_id), "account_id", "is required")
    check.raise_if_any()
    return OutcomeEvent(
        outcome=outcome,
        decision_id=request.decision_id,
        account_id=request.account_id,
        wallet_id=request.wallet_id,
        payer_id=request.payer_id,
        session_id=request.session_id,
        ip=_ip(request.client.ip_address),
        device_id=request.client.device_id,
        amount_minor=request.amount.amount_minor,
        currency=request.amount.currency,
        movement_id=request.movement_id,
        identifier_hash=request.identifier_hash,
        occurred_at=moment_or_none(request, "occurred_at") or now,
        represents=max(request.represents, 1),
    )


def decision_query(
    request: risk_pb2.ListDecisionsRequest,
) -> tuple[str, datetime | None, int, After | None]:
    """(the IP in one spelling, since, limit, after)."""
    limit, after = page_of(request.page)
    return _ip(request.ip_address), moment_or_none(request, "since"), limit, after


def rule_update(request: risk_pb2.UpdateRuleRequest) -> tuple[RuleUpdate, str]:
    """The change and its reason; whether the rule and its thresholds exist is the
    use case's to check."""
    check = Violations()
    _present(check, "reason", request.reason)
    for name, value in request.thresholds.items():
        if not (value >= 0 and value < 1e12):
            check.add(f"thresholds[{name}]", "must be a number from 0 to 1e12")
    if request.HasField("auto_action") and request.auto_action:
        check.require(
            request.rule_id.startswith("alert."), "auto_action", "only alert rules flip switches"
        )
        try:
            parse_switch(request.auto_action)
        except ValueError:
            check.add("auto_action", "must name a switch, for example top_up_channel:card")
    check.raise_if_any()
    verdict = (
        Verdict[risk_pb2.Verdict.Name(request.verdict).removeprefix("VERDICT_")]
        if request.verdict != risk_pb2.VERDICT_UNSPECIFIED
        else None
    )
    update = RuleUpdate(
        rule_id=request.rule_id,
        enabled=request.enabled if request.HasField("enabled") else None,
        thresholds=dict(request.thresholds),
        verdict=verdict,
        auto_action=request.auto_action if request.HasField("auto_action") else None,
    )
    return update, request.reason


# Switches keyed by a name: (the key's field, the value's field, its pattern, in words).
_NAME = "must be 1 to 64 of a-z 0-9 _ . -"
_KEYED = {
    "country": ("country_code", "blocked", _COUNTRY, "must be ISO 3166-1 alpha-2, upper case"),
    "external_login": ("provider", "suspended", _PROVIDER, _NAME),
    "partner": ("partner_id", "suspended", _PROVIDER, _NAME),
}


def policy_change(request: risk_pb2.SetPolicyRequest) -> tuple[PolicyChange, str]:
    """The one switch a SetPolicyRequest flips (the proto requires one), and its reason."""
    check = Violations()
    _present(check, "reason", request.reason)
    which = request.WhichOneof("change")
    assert which is not None  # the proto requires one
    change = PolicyChange(switch=which, value=False)
    if which in _KEYED:
        key_field, value_field, pattern, description = _KEYED[which]
        given = getattr(request, which)
        key = getattr(given, key_field)
        check.require(bool(pattern.match(key)), f"{which}.{key_field}", description)
        change = PolicyChange(switch=which, key=key, value=getattr(given, value_field))
    elif which == "top_up_channel":
        channel = request.top_up_channel.channel
        if _known(channel, risk_pb2.TopUpChannel):
            change = PolicyChange(
                switch=which, key=channel_name(channel), value=request.top_up_channel.suspended
            )
        else:
            check.add("top_up_channel.channel", "must be a top-up channel")
    elif which == "payment_fallback_limit":
        limit = request.payment_fallback_limit
        change = PolicyChange(switch=which, value=limit.amount_minor, currency=limit.currency)
    elif which == "network":
        try:
            network = network_of(request.network.network)
        except ValueError:
            check.add(
                "network.network",
                "must be an IPv4 or IPv6 network in CIDR form with its host bits zero, "
                f"no broader than /{BROADEST_PREFIX[4]} (IPv6 /{BROADEST_PREFIX[6]})",
            )
        else:
            change = PolicyChange(switch=which, key=network, value=request.network.blocked)
    else:
        change = PolicyChange(switch=which, value=bool(getattr(request, which)))
    check.raise_if_any()
    return change, request.reason


def open_case(request: risk_pb2.OpenCaseRequest) -> OpenCase:
    if request.source == risk_pb2.CASE_SOURCE_ALERT and not request.alert_id:
        raise InvalidArgument([("alert_id", "is required for alert cases")])
    return OpenCase(
        idempotency_key=request.idempotency_key,
        source=risk_pb2.CaseSource.Name(request.source).removeprefix("CASE_SOURCE_").lower(),
        account_id=request.account_id,
        wallet_id=request.wallet_id,
        alert_id=request.alert_id,
        movement_id=request.movement_id,
        description=request.description,
    )


def case_update(
    request: risk_pb2.UpdateCaseRequest,
) -> tuple[uuid.UUID, str | None, str | None, str | None]:
    """(case, status, assignee, note); None leaves a field as it is."""
    if request.HasField("note") and not request.note.strip():
        raise InvalidArgument([("note", "is required")])
    return (
        uuid.UUID(request.case_id),
        case_status(request.status) or None,
        request.assignee if request.HasField("assignee") else None,
        request.note if request.HasField("note") else None,
    )


def fraud_confirmation(
    request: risk_pb2.ConfirmFraudRequest,
) -> tuple[uuid.UUID, Indicators, str]:
    """(case, indicators, reason)."""
    check = Violations()
    _present(check, "reason", request.reason)
    confirmed = indicators(check, "indicators", request.indicators)
    check.raise_if_any()
    return uuid.UUID(request.case_id), confirmed, request.reason


def affected_query(request: risk_pb2.FindAffectedAccountsRequest) -> uuid.UUID | Indicators:
    """The case whose indicators to follow, or the indicators given."""
    if request.WhichOneof("query") == "case_id":
        return uuid.UUID(request.case_id)
    check = Violations()
    given = indicators(check, "indicators", request.indicators)
    check.raise_if_any()
    return given


def indicators(check: Violations, field: str, given: risk_pb2.Indicators) -> Indicators:
    """Validated indicators; IPs in one spelling, subnets as networks."""
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
    start = moment(given.window_start)
    end = moment_or_none(given, "window_end")
    if end is not None:
        check.require(end > start, f"{field}.window_end", "must be after window_start")
    return Indicators(
        ip_addresses=tuple(sorted(set(ips))),
        subnets=tuple(sorted(set(subnets))),
        device_ids=tuple(sorted(set(given.device_ids))),
        window_start=start,
        window_end=end,
    )


# ---------------------------------------------------------------- answers


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _money(amount_minor: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount_minor, currency=currency)


def decision_to_proto(decision: StoredDecision) -> risk_pb2.Decision:
    return risk_pb2.Decision(
        decision_id=str(decision.decision_id),
        verdict=verdict_to_proto(decision.verdict),
        score=decision.score,
        reasons=[
            risk_pb2.Reason(
                rule_id=r.rule_id, observed=r.observed, threshold=r.threshold, detail=r.detail
            )
            for r in decision.reasons
        ],
        country_code=decision.country_code,
    )


def decision_record(decision: StoredDecision) -> risk_pb2.DecisionRecord:
    return risk_pb2.DecisionRecord(
        decision=decision_to_proto(decision),
        kind=decision.kind,
        inputs_json=_json(decision.inputs),
        decided_at=timestamp(decision.decided_at),
    )


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
        payment_fallback_limit=_money(
            policy.payment_fallback_limit_minor, policy.payment_fallback_currency
        ),
        updated_at=timestamp(policy.updated_at),
        suspended_partners=sorted(policy.suspended_partners),
        blocked_networks=sorted(policy.blocked_networks),
        contained_networks=sorted(policy.contained_networks),
        containment_until=timestamp(policy.containment_until),
        containment_alert_id=policy.containment_alert_id,
    )


def policy_change_to_proto(record: PolicyChangeRecord) -> risk_pb2.PolicyChange:
    return risk_pb2.PolicyChange(
        change_id=str(record.change_id),
        actor=record.actor,
        reason=record.reason,
        change_json=_json(record.change),
        changed_at=timestamp(record.changed_at),
        policy_version=record.policy_version,
    )


def rule_to_proto(rule: Rule) -> risk_pb2.Rule:
    return risk_pb2.Rule(
        rule_id=rule.rule_id,
        description=rule.description,
        enabled=rule.enabled,
        thresholds=dict(rule.thresholds),
        verdict=verdict_to_proto(rule.verdict),
        auto_action=rule.auto_action,
    )


def alert_to_proto(alert: Alert) -> risk_pb2.Alert:
    return risk_pb2.Alert(
        alert_id=str(alert.alert_id),
        rule_id=alert.rule_id,
        status=risk_pb2.AlertStatus.Value(f"ALERT_STATUS_{alert.status.upper()}"),
        raised_at=timestamp(alert.raised_at),
        evidence_json=_json(alert.evidence),
        auto_action_taken=alert.auto_action_taken,
    )


def case_to_proto(case: Case) -> risk_pb2.Case:
    stored = case.indicators
    return risk_pb2.Case(
        case_id=str(case.case_id),
        status=risk_pb2.CaseStatus.Value(f"CASE_STATUS_{case.status.upper()}"),
        source=risk_pb2.CaseSource.Value(f"CASE_SOURCE_{case.source.upper()}"),
        account_id=case.account_id,
        wallet_id=case.wallet_id,
        alert_id=case.alert_id,
        assignee=case.assignee,
        notes=list(case.notes),
        indicators=None
        if stored is None
        else risk_pb2.Indicators(
            ip_addresses=stored.ip_addresses,
            subnets=stored.subnets,
            device_ids=stored.device_ids,
            window_start=timestamp(stored.window_start),
            window_end=timestamp(stored.window_end),
        ),
        opened_at=timestamp(case.opened_at),
        updated_at=timestamp(case.updated_at),
        movement_id=case.movement_id,
    )


def affected_to_proto(
    accounts: Sequence[AffectedAccount],
) -> risk_pb2.FindAffectedAccountsResponse:
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
                        amount=_money(m.amount_minor, m.currency),
                        occurred_at=timestamp(m.occurred_at),
                        session_id=m.session_id,
                    )
                    for m in account.movements
                ],
                total=_money(account.total_minor, currency),
            )
            for account in accounts
        ],
        total=_money(sum(a.total_minor for a in accounts), currency),
    )
