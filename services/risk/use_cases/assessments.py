"""The four assessments (sign-in, sign-up, top-up, payment) on one skeleton:
gather the signals (counted in memory, see counting.py), decide with the rules
and policy in force, record the decision, answer once it is stored.

Each kind says only what differs: which signals it reads, which domain rules
decide, and which inputs it keeps for the record.
"""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from services.risk.domain import assess
from services.risk.domain.assess import LoginSignals
from services.risk.domain.decisions import Assessment, StoredDecision
from services.risk.domain.network import subnet_of
from services.risk.domain.policy import Policy
from services.risk.domain.rules import RuleBook
from services.risk.domain.windows import LoginWindows, bucket_of, window_start
from services.risk.use_cases.ports import Clock, CountryLookup, DecisionLog, PolicyInForce, Signals
from services.runtime import metrics


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Command:
    """What every assessment may carry: the caller's IP (normalised) and account."""

    ip: str = ""
    account_id: str = ""
    device_id: str = ""


@dataclass(frozen=True, kw_only=True)
class LoginCommand(Command):
    identifier_hash: str
    known_device: bool
    method: str


@dataclass(frozen=True, kw_only=True)
class RegistrationCommand(Command):
    email_domain: str


@dataclass(frozen=True, kw_only=True)
class TopUpCommand(Command):
    wallet_id: str
    payer_id: str
    amount_minor: int
    currency: str
    channel: str
    funding_source_id: str
    new_funding_source: bool
    session_id: str


@dataclass(frozen=True, kw_only=True)
class PaymentCommand(Command):
    wallet_id: str
    payer_id: str
    amount_minor: int
    currency: str
    merchant_id: str
    merchant_category: str
    store_id: str
    basket: tuple[str, ...]
    session_id: str


@dataclass(frozen=True)
class Situation:
    """What an assessment knows before its own signals: when, from where, what is in force."""

    now: datetime
    country: str
    rules: RuleBook
    policy: Policy


C = TypeVar("C", bound=Command)
S = TypeVar("S")


class Kind(abc.ABC, Generic[C, S]):
    name: ClassVar[str]

    @abc.abstractmethod
    async def gather(self, signals: Signals, command: C, at: Situation) -> S: ...

    @abc.abstractmethod
    def decide(self, command: C, signals: S, at: Situation) -> Assessment: ...

    @abc.abstractmethod
    def inputs(self, command: C, signals: S) -> dict[str, Any]:
        """What the decision was based on, kept with it (the policy version is added)."""


class Login(Kind[LoginCommand, LoginSignals]):
    name = "login"

    async def gather(self, signals: Signals, command: LoginCommand, at: Situation) -> LoginSignals:
        return await signals.login(
            ip=command.ip,
            subnet=subnet_of(command.ip),
            device_id=command.device_id,
            known_device=command.known_device,
            account_id=command.account_id,
            identifier=command.identifier_hash or command.account_id,
            unknown=not command.account_id,
            windows=LoginWindows.of(at.now, at.rules),
        )

    def decide(self, command: LoginCommand, signals: LoginSignals, at: Situation) -> Assessment:
        facts = assess.LoginFacts(
            account_known=bool(command.account_id),
            known_device=command.known_device,
            method=command.method,
            country=at.country,
            now=at.now,
            ip=command.ip,
        )
        return assess.assess_login(facts, signals, at.rules, at.policy)

    def inputs(self, command: LoginCommand, signals: LoginSignals) -> dict[str, Any]:
        return {
            "account_id": command.account_id,
            "identifier_hash": command.identifier_hash,
            "ip_address": command.ip,
            "device_id": command.device_id,
            "known_device": command.known_device,
            "method": command.method,
            "signals": {
                "ip_failures": signals.ip_failures,
                "subnet_failures": signals.subnet_failures,
                "account_failures": signals.account_failures,
                "global_failures": signals.global_failures,
                "global_attempts": signals.global_attempts,
                "global_unknown_attempts": signals.global_unknown_attempts,
                "ip_distinct_identifiers": signals.ip_distinct_identifiers,
                "device_distinct_identifiers": signals.device_distinct_identifiers,
            },
        }


class Registration(Kind[RegistrationCommand, int]):
    name = "registration"

    async def gather(self, signals: Signals, command: RegistrationCommand, at: Situation) -> int:
        return await signals.registration(
            ip=command.ip,
            bucket=bucket_of(at.now),
            since_bucket=window_start(at.now, at.rules.window("registration.ip_velocity")),
        )

    def decide(self, command: RegistrationCommand, signals: int, at: Situation) -> Assessment:
        return assess.assess_registration(at.country, signals, at.rules, at.policy)

    def inputs(self, command: RegistrationCommand, signals: int) -> dict[str, Any]:
        return {
            "email_domain": command.email_domain.lower(),
            "ip_address": command.ip,
            "device_id": command.device_id,
            "signals": {"ip_registrations": signals},
        }


TopUpSignals = tuple[int, datetime | None]


class TopUp(Kind[TopUpCommand, TopUpSignals]):
    name = "top_up"

    async def gather(self, signals: Signals, command: TopUpCommand, at: Situation) -> TopUpSignals:
        return await signals.top_up(
            wallet_id=command.wallet_id,
            session_id=command.session_id,
            bucket=bucket_of(at.now),
            since_bucket=window_start(at.now, at.rules.window("top_up.velocity")),
        )

    def decide(self, command: TopUpCommand, signals: TopUpSignals, at: Situation) -> Assessment:
        earlier, changed_at = signals
        facts = assess.TopUpFacts(
            amount_minor=command.amount_minor,
            channel=command.channel,
            new_funding_source=command.new_funding_source,
            country=at.country,
            now=at.now,
        )
        return assess.assess_top_up(facts, earlier, changed_at, at.rules, at.policy)

    def inputs(self, command: TopUpCommand, signals: TopUpSignals) -> dict[str, Any]:
        return {
            "wallet_id": command.wallet_id,
            "payer_id": command.payer_id,
            "amount_minor": command.amount_minor,
            "currency": command.currency,
            "channel": command.channel,
            "funding_source_id": command.funding_source_id,
            "new_funding_source": command.new_funding_source,
            "session_id": command.session_id,
            "ip_address": command.ip,
            "device_id": command.device_id,
            "signals": {"recent_top_ups": signals[0]},
        }


PaymentSignals = tuple[int, datetime | None, bool]


class Payment(Kind[PaymentCommand, PaymentSignals]):
    name = "payment"

    async def gather(
        self, signals: Signals, command: PaymentCommand, at: Situation
    ) -> PaymentSignals:
        return await signals.payment(
            wallet_id=command.wallet_id,
            bucket=bucket_of(at.now),
            since_bucket=window_start(at.now, at.rules.window("payment.velocity")),
        )

    def decide(self, command: PaymentCommand, signals: PaymentSignals, at: Situation) -> Assessment:
        earlier, top_up_at, from_new_device = signals
        facts = assess.PaymentFacts(
            amount_minor=command.amount_minor,
            merchant_category=command.merchant_category,
            basket=list(command.basket),
            now=at.now,
        )
        return assess.assess_payment(
            facts, earlier, top_up_at, from_new_device, at.rules, at.policy
        )

    def inputs(self, command: PaymentCommand, signals: PaymentSignals) -> dict[str, Any]:
        return {
            "wallet_id": command.wallet_id,
            "payer_id": command.payer_id,
            "amount_minor": command.amount_minor,
            "currency": command.currency,
            "merchant_id": command.merchant_id,
            "merchant_category": command.merchant_category,
            "store_id": command.store_id,
            "basket": list(command.basket),
            "device_id": command.device_id,
            "session_id": command.session_id,
            "signals": {
                "recent_payments": signals[0],
                "last_top_up_from_new_device": signals[2],
            },
        }


class Assessments:
    def __init__(
        self,
        *,
        in_force: PolicyInForce,
        signals: Signals,
        decisions: DecisionLog,
        countries: CountryLookup,
        clock: Clock = utc_now,
    ) -> None:
        self._in_force = in_force
        self._signals = signals
        self._decisions = decisions
        self._countries = countries
        self._clock = clock

    async def login(self, command: LoginCommand) -> StoredDecision:
        return await self._assess(Login(), command)

    async def logins(self, commands: Sequence[LoginCommand]) -> list[StoredDecision]:
        """Each attempt assessed as ``login`` would, at once: their reads of stored
        history and their decisions' writes go to the database together."""
        return list(await asyncio.gather(*(self._assess(Login(), c) for c in commands)))

    async def registration(self, command: RegistrationCommand) -> StoredDecision:
        return await self._assess(Registration(), command)

    async def top_up(self, command: TopUpCommand) -> StoredDecision:
        return await self._assess(TopUp(), command)

    async def payment(self, command: PaymentCommand) -> StoredDecision:
        return await self._assess(Payment(), command)

    async def payments(self, commands: Sequence[PaymentCommand]) -> list[StoredDecision]:
        """Each payment assessed as ``payment`` would, at once (see ``logins``)."""
        return list(await asyncio.gather(*(self._assess(Payment(), c) for c in commands)))

    async def _assess(self, kind: Kind[C, S], command: C) -> StoredDecision:
        at = Situation(
            now=self._clock(),
            country=self._countries(command.ip) if command.ip else "",
            rules=self._in_force.rules,
            policy=self._in_force.policy,
        )
        signals = await kind.gather(self._signals, command, at)
        result = kind.decide(command, signals, at)
        assess.refuse_blocked_network(result, command.ip, at.rules, at.policy)
        decision = StoredDecision(
            decision_id=uuid.uuid4(),
            kind=kind.name,
            verdict=result.verdict,
            score=result.score,
            reasons=tuple(result.reasons),
            inputs={**kind.inputs(command, signals), "policy_version": at.policy.version},
            country_code=at.country,
            account_id=command.account_id,
            ip=command.ip,
            decided_at=at.now,
        )
        metrics.RISK_DECISIONS.labels(kind.name, result.verdict.name.lower()).inc()
        # The answer waits for its decision to be stored, so the audit trail holds every
        # decision a caller acted on.
        await self._decisions.add(decision)
        return decision
