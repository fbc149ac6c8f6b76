"""The one assessment skeleton (gather signals, decide, record, answer) with fakes
of its ports: every kind reads its signals once, decides with the policy in force,
and records exactly the decision it answers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.risk.domain.assess import LoginSignals
from services.risk.domain.decisions import StoredDecision
from services.risk.domain.policy import Policy
from services.risk.domain.rules import RuleBook, Verdict
from services.risk.domain.windows import LoginWindows, bucket_of, window_start
from services.risk.use_cases.assessments import (
    Assessments,
    LoginCommand,
    PaymentCommand,
    RegistrationCommand,
    TopUpCommand,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
WALLET = "0190f5a4-0000-7000-8000-000000000001"
ACCOUNT = "0190f5a4-0000-7000-8000-0000000000aa"


@dataclass
class FakeSignals:
    """Answers what each test sets, and remembers every call (one per assessment)."""

    login_signals: LoginSignals = field(
        default_factory=lambda: LoginSignals(
            ip_failures=0, subnet_failures=0, account_failures=0, global_failures=0,
            global_attempts=0, global_unknown_attempts=0, ip_distinct_identifiers=1,
            previous_login_country=None, previous_login_at=None,
        )
    )  # fmt: skip
    registrations: int = 0
    top_ups: tuple[int, datetime | None] = (0, None)
    payments: tuple[int, datetime | None, bool] = (0, None, False)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def login(self, **kwargs: Any) -> LoginSignals:
        self.calls.append(("login", kwargs))
        return self.login_signals

    async def registration(self, **kwargs: Any) -> int:
        self.calls.append(("registration", kwargs))
        return self.registrations

    async def top_up(self, **kwargs: Any) -> tuple[int, datetime | None]:
        self.calls.append(("top_up", kwargs))
        return self.top_ups

    async def payment(self, **kwargs: Any) -> tuple[int, datetime | None, bool]:
        self.calls.append(("payment", kwargs))
        return self.payments


@dataclass
class FakeDecisionLog:
    """Stores a decision when ``add`` returns, as the group commit does."""

    added: list[StoredDecision] = field(default_factory=list)

    async def add(self, decision: StoredDecision) -> None:
        self.added.append(decision)


@dataclass
class InForce:
    policy: Policy = field(default_factory=Policy)
    rules: RuleBook = field(default_factory=RuleBook)


@dataclass
class Countries:
    by_ip: dict[str, str] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def __call__(self, ip: str) -> str:
        self.asked.append(ip)
        return self.by_ip.get(ip, "")


@dataclass
class World:
    signals: FakeSignals = field(default_factory=FakeSignals)
    log: FakeDecisionLog = field(default_factory=FakeDecisionLog)
    in_force: InForce = field(default_factory=InForce)
    countries: Countries = field(default_factory=lambda: Countries({"133.1.2.3": "JP"}))

    def assessments(self) -> Assessments:
        return Assessments(
            in_force=self.in_force,
            signals=self.signals,
            decisions=self.log,
            countries=self.countries,
            clock=lambda: NOW,
        )


def login(**changes: Any) -> LoginCommand:
    values: dict[str, Any] = dict(
        ip="133.1.2.3", account_id=ACCOUNT, device_id="device-1", identifier_hash="h-1",
        known_device=True, method="password",
    )  # fmt: skip
    values.update(changes)
    return LoginCommand(**values)


def top_up(**changes: Any) -> TopUpCommand:
    values: dict[str, Any] = dict(
        ip="133.1.2.3", device_id="device-1", wallet_id=WALLET, payer_id="payer-1",
        amount_minor=3000, currency="JPY", channel="card", funding_source_id="card-1",
        new_funding_source=False, session_id="session-1",
    )  # fmt: skip
    values.update(changes)
    return TopUpCommand(**values)


def payment(**changes: Any) -> PaymentCommand:
    values: dict[str, Any] = dict(
        device_id="device-1", wallet_id=WALLET, payer_id="payer-1", amount_minor=500,
        currency="JPY", merchant_id="m-1", merchant_category="5411", store_id="s-1",
        basket=("food",), session_id="session-1",
    )  # fmt: skip
    values.update(changes)
    return PaymentCommand(**values)


async def test_a_quiet_sign_in_is_allowed_and_recorded_as_answered_with_its_inputs():
    world = World()
    decision = await world.assessments().login(login())
    assert world.log.added == [decision]
    assert (decision.kind, decision.verdict, decision.score) == ("login", Verdict.ALLOW, 0)
    assert (decision.country_code, decision.account_id, decision.ip) == ("JP", ACCOUNT, "133.1.2.3")
    assert decision.decided_at == NOW
    assert decision.inputs["method"] == "password"
    assert decision.inputs["policy_version"] == 0
    assert decision.inputs["signals"]["ip_distinct_identifiers"] == 1


async def test_each_assessment_reads_its_signals_in_exactly_one_call():
    world = World()
    assessments = world.assessments()
    await assessments.login(login())
    await assessments.registration(RegistrationCommand(ip="133.1.2.3", email_domain="a.jp"))
    await assessments.top_up(top_up())
    await assessments.payment(payment())
    assert [name for name, _ in world.signals.calls] == [
        "login", "registration", "top_up", "payment",
    ]  # fmt: skip
    assert len(world.log.added) == 4


async def test_sign_in_signals_are_read_over_the_rules_windows_ending_now():
    world = World()
    await world.assessments().login(login(account_id="", identifier_hash="h-9"))
    _, call = world.signals.calls[0]
    assert call == {
        "ip": "133.1.2.3", "subnet": "133.1.2.0/24", "device_id": "device-1",
        "known_device": True, "account_id": "", "identifier": "h-9", "unknown": True,
        "windows": LoginWindows.of(NOW, RuleBook()),
    }  # fmt: skip


async def test_a_top_up_counts_over_the_velocity_window_of_the_rules_in_force():
    world = World()
    await world.assessments().top_up(top_up())
    _, call = world.signals.calls[0]
    assert call["bucket"] == bucket_of(NOW)
    assert call["since_bucket"] == window_start(NOW, RuleBook().window("top_up.velocity"))


async def test_a_blocked_country_denies_through_the_policy_in_force_and_names_its_version():
    world = World()
    world.in_force.policy = Policy(version=7, blocked_countries=frozenset({"JP"}))
    decision = await world.assessments().login(login())
    assert decision.verdict == Verdict.DENY
    assert [r.rule_id for r in decision.reasons] == ["login.blocked_country"]
    assert decision.inputs["policy_version"] == 7


async def test_signals_from_the_store_decide_the_verdict():
    world = World()
    world.signals.top_ups = (0, NOW - timedelta(minutes=5))
    decision = await world.assessments().top_up(top_up())
    assert "top_up.after_credential_change" in [r.rule_id for r in decision.reasons]
    assert decision.verdict > Verdict.ALLOW


async def test_a_payment_carries_no_address_so_no_country_is_looked_up():
    world = World()
    decision = await world.assessments().payment(payment(basket=("food", "tobacco")))
    assert world.countries.asked == []
    assert (decision.country_code, decision.ip, decision.account_id) == ("", "", "")
    assert decision.inputs["basket"] == ["food", "tobacco"]


async def test_a_top_up_without_an_address_is_decided_without_a_country():
    world = World()
    decision = await world.assessments().top_up(top_up(ip=""))
    assert world.countries.asked == []
    assert decision.country_code == ""


async def test_a_device_trying_many_accounts_is_throttled_and_the_count_is_kept():
    world = World()
    world.signals.login_signals = dataclasses.replace(
        world.signals.login_signals, device_distinct_identifiers=10
    )
    decision = await world.assessments().login(login(known_device=False))
    assert decision.verdict == Verdict.THROTTLE
    assert [r.rule_id for r in decision.reasons] == [
        "login.device_distinct_accounts", "login.new_device",
    ]  # fmt: skip
    assert decision.inputs["signals"]["device_distinct_identifiers"] == 10


async def test_every_decision_gets_its_own_id():
    world = World()
    assessments = world.assessments()
    first = await assessments.login(login())
    second = await assessments.login(login())
    assert first.decision_id != second.decision_id
