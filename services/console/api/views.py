"""Replies of risk and the wallet turned into what the templates show; the only
module of the console besides clients/ that reads their messages' fields."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2

from services.console.domain.charts import Point
from services.runtime.convert import moment

TOP_UP_CHANNELS = ("card", "bank", "cash_register", "atm", "points")


def when(stamp: Any) -> str:
    return moment(stamp).strftime("%Y-%m-%d %H:%M:%S UTC") if stamp.seconds else ""


def yen(money: common_pb2.Money) -> str:
    return f"{money.amount_minor:,} {money.currency or 'JPY'}"


def _enum(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).replace("_", " ").lower()


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return text


def alerts(found: list[risk_pb2.Alert]) -> list[dict[str, str]]:
    return [
        {
            "id": alert.alert_id,
            "rule": alert.rule_id,
            "status": _enum(risk_pb2.AlertStatus, alert.status, "ALERT_STATUS_"),
            "raised_at": when(alert.raised_at),
            "evidence": _pretty(alert.evidence_json),
            "auto_action": _pretty(alert.auto_action_taken) if alert.auto_action_taken else "",
        }
        for alert in found
    ]


@dataclass(frozen=True)
class Switch:
    """A yes/no switch; ``on`` means suspended (or, for wind-down, entered)."""

    switch: str
    key: str
    label: str
    on: bool

    @property
    def state(self) -> str:
        if self.switch == "wind_down":
            return "in wind-down" if self.on else "off"
        return "suspended" if self.on else "open"

    @property
    def action(self) -> str:
        if self.switch == "wind_down":
            return "Leave wind-down" if self.on else "Enter wind-down"
        return "Resume" if self.on else "Suspend"


def policy(found: risk_pb2.Policy) -> dict[str, Any]:
    suspended = {
        _enum(risk_pb2.TopUpChannel, channel, "TOP_UP_CHANNEL_").replace(" ", "_")
        for channel in found.top_up_suspended_channels
    }
    switches = [
        Switch(
            "top_up_channel", channel, f"{channel.replace('_', ' ')} top-ups", channel in suspended
        )
        for channel in TOP_UP_CHANNELS
    ]
    switches += [
        Switch("registration_suspended", "", "registration", found.registration_suspended),
        Switch("payments_suspended", "", "store payments", found.payments_suspended),
        Switch("wind_down", "", "wind-down (payouts only)", found.wind_down),
    ]
    return {
        "version": found.version,
        "updated_at": when(found.updated_at),
        "switches": switches,
        "blocked_countries": list(found.blocked_countries),
        "external_login_suspended": list(found.external_login_suspended_providers),
        "suspended_partners": list(found.suspended_partners),
        "fallback_limit": found.payment_fallback_limit.amount_minor,
    }


def changes(found: list[risk_pb2.PolicyChange]) -> list[dict[str, str]]:
    return [
        {
            "actor": change.actor,
            "reason": change.reason,
            "change": _pretty(change.change_json),
            "at": when(change.changed_at),
            "version": str(change.policy_version),
        }
        for change in found
    ]


def _case_row(found: risk_pb2.Case) -> dict[str, Any]:
    return {
        "id": found.case_id,
        "status": _enum(risk_pb2.CaseStatus, found.status, "CASE_STATUS_"),
        "source": _enum(risk_pb2.CaseSource, found.source, "CASE_SOURCE_"),
        "account_id": found.account_id,
        "wallet_id": found.wallet_id,
        "movement_id": found.movement_id,
        "assignee": found.assignee,
        "opened_at": when(found.opened_at),
        "updated_at": when(found.updated_at),
        "confirmed": found.status
        in (risk_pb2.CASE_STATUS_CONFIRMED_FRAUD, risk_pb2.CASE_STATUS_CLOSED),
        "confirmable": found.status
        in (risk_pb2.CASE_STATUS_OPEN, risk_pb2.CASE_STATUS_INVESTIGATING),
    }


def cases(found: list[risk_pb2.Case]) -> list[dict[str, Any]]:
    return [_case_row(item) for item in found]


def case(found: risk_pb2.Case) -> dict[str, Any]:
    row = _case_row(found)
    indicators = found.indicators
    row.update(
        notes=list(found.notes),
        ips=list(indicators.ip_addresses),
        subnets=list(indicators.subnets),
        devices=list(indicators.device_ids),
        window_start=when(indicators.window_start),
        window_end=when(indicators.window_end),
    )
    return row


def victims(found: risk_pb2.FindAffectedAccountsResponse) -> dict[str, Any]:
    return {
        "total": yen(found.total),
        "accounts": [
            {
                "account_id": account.account_id,
                "sessions": len(account.session_ids),
                "total": yen(account.total),
                "movements": [
                    {
                        "id": movement.movement_id,
                        "kind": movement.kind.replace("_", " "),
                        "amount": yen(movement.amount),
                        "at": when(movement.occurred_at),
                    }
                    for movement in account.movements
                ],
            }
            for account in found.accounts
        ],
    }


def compensation(found: wallet_pb2.CompensateCaseResponse) -> dict[str, Any]:
    return {
        "total": yen(found.total),
        "newly_paid": found.newly_paid,
        "lines": [
            {
                "movement_id": line.movement_id,
                "wallet_id": line.wallet_id,
                "amount": yen(line.amount),
                "method": line.method.replace("_", " "),
                "compensation_movement_id": line.compensation_movement_id,
            }
            for line in found.lines
        ],
    }


def point(record: risk_pb2.DecisionRecord) -> Point:
    return Point(
        decided_at=moment(record.decided_at),
        kind=record.kind,
        verdict=risk_pb2.Verdict.Name(record.decision.verdict).removeprefix("VERDICT_"),
    )
