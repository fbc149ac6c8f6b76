"""What identity's use cases need from outside, as Protocols (the adapters live in clients/
and storage/)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

from services.identity.domain.admission import AdmissionPolicy, AdmittedPlace, Lane
from services.identity.domain.login import FailedSignIn, RiskVerdict
from services.runtime.device_proof import ProvenDevice


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM_CLOCK = SystemClock()


class Assessment(Protocol):
    """Risk's answer about one attempt."""

    @property
    def verdict(self) -> RiskVerdict: ...

    @property
    def decision_id(self) -> str: ...

    @property
    def country_code(self) -> str: ...


class Risk(Protocol):
    """The risk service: asked before any password hash, told the outcome after."""

    async def assess_login(
        self,
        *,
        account_id: uuid.UUID | None,
        identifier_hash: str,
        client: common_pb2.ClientContext,
        known_device: bool,
        method: str,
    ) -> Assessment: ...

    async def assess_registration(
        self, *, email_domain: str, client: common_pb2.ClientContext
    ) -> Assessment: ...

    def record_outcome(
        self,
        outcome: risk_pb2.Outcome.ValueType,
        *,
        decision_id: str = "",
        account_id: uuid.UUID | None = None,
        session_id: uuid.UUID | None = None,
        client: common_pb2.ClientContext | None = None,
        identifier_hash: str = "",
    ) -> None:
        """Fire and forget: never delays the answer."""
        ...

    def report_refusal(self, *, client: common_pb2.ClientContext, identifier_hash: str) -> bool:
        """Tell risk of an attempt refused before it was asked, as a failure (fire and
        forget, at a bounded rate); True when this one was reported."""
        ...


class Hasher(Protocol):
    """argon2 within a budget of concurrent hashes, in two lanes; a hash refused by the
    budget raises ``HashBudgetExhausted``."""

    async def hash(self, password: str, *, lane: Lane = Lane.NEW_DEVICE) -> str: ...

    async def verify(
        self,
        stored: str | None,
        password: str,
        *,
        lane: Lane = Lane.NEW_DEVICE,
        place: AdmittedPlace | None = None,
    ) -> bool:
        """True when ``password`` matches; an absent hash still costs one verification.
        ``place``: one the caller was admitted to (``admit``), which this uses up."""
        ...

    def needs_rehash(self, stored: str) -> bool: ...

    def has_room(self, lane: Lane) -> bool:
        """Whether an attempt of ``lane`` would be admitted now rather than refused."""
        ...

    def admit(self, lane: Lane) -> AdmittedPlace | None:
        """A place in ``lane`` for a hash to come; None when the lane is full."""
        ...

    def typical_seconds(self) -> float:
        """About how long one hash takes here lately."""
        ...

    async def stand_in(
        self, *, lane: Lane = Lane.NEW_DEVICE, place: AdmittedPlace | None = None
    ) -> None:
        """Wait in ``lane`` as a hash would, for a hash's time, without computing one."""
        ...


class Admission(Protocol):
    """Risk's policy as identity enforces it before asking risk."""

    def current(self) -> AdmissionPolicy: ...

    def country_of(self, ip: str) -> str: ...


class BreachedPasswords(Protocol):
    async def is_breached(self, password: str) -> bool:
        """True when the password is known from a breach; False when unsure."""
        ...


class SignInStore(Protocol):
    """What a password sign-in reads and writes before its answer."""

    async def login_candidate(self, login_key: str, proven: ProvenDevice | None) -> Any:
        """The account row for ``login_key`` (None for no account), with ``proof_fresh``
        and ``known_device``; one statement either way, spending the proof."""
        ...

    async def queue_failed_sign_in(self, failure: FailedSignIn) -> None:
        """Store a failed sign-in for counting after the answer; one write either way."""
        ...
