"""Sign-in's refusals, with in-memory stand-ins for its ports: every one is the same
INVALID_CREDENTIALS, and what it leaves behind waits in the queue for after the answer.
Admission refuses before any hash, and before any work it can avoid."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

from services.identity.domain.admission import (
    MAX_CONSECUTIVE_FAILURES,
    OPEN_POLICY,
    AdmissionPolicy,
    AdmittedPlace,
    HashBudgetExhausted,
    Lane,
    Networks,
)
from services.identity.domain.login import FailedSignIn, RiskVerdict
from services.identity.domain.sealing import Pseudonyms, SecretBox
from services.identity.settings import IdentitySettings
from services.identity.use_cases import Identity
from services.identity.use_cases.keys import KeyRing
from services.runtime.config import load_settings
from services.runtime.device_proof import DeviceKey, ProvenDevice
from services.runtime.errors import Unauthenticated

CLIENT = common_pb2.ClientContext(ip_address="192.0.2.7", device_id="laptop", user_agent="ua")
PASSWORD = "the owner's long passphrase"


@dataclass(frozen=True)
class Verdict:
    verdict: RiskVerdict
    decision_id: str = "decision-1"
    country_code: str = "JP"


@dataclass
class FakeRisk:
    verdict: RiskVerdict = RiskVerdict.ALLOW
    outcomes: list[int] = field(default_factory=list)
    assessed: int = 0
    refusals: list[str] = field(default_factory=list)
    # What changes elsewhere while risk is being asked.
    meanwhile: Callable[[], None] | None = None

    async def assess_login(self, **_: Any) -> Verdict:
        self.assessed += 1
        if self.meanwhile is not None:
            self.meanwhile()
        return Verdict(self.verdict)

    def report_refusal(self, *, client: common_pb2.ClientContext, identifier_hash: str) -> bool:
        self.refusals.append(client.ip_address)
        return True

    async def assess_registration(self, **_: Any) -> Verdict:
        return Verdict(self.verdict)

    def record_outcome(self, outcome: risk_pb2.Outcome.ValueType, **_: Any) -> None:
        self.outcomes.append(outcome)


@dataclass
class FakePlace:
    given_up: bool = False

    def give_up(self) -> None:
        self.given_up = True


@dataclass
class FakeHasher:
    computed: int = 0
    places: list[FakePlace] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    # Lanes whose budget is spent: no room now, and a hash asked of them is refused.
    full: set[Lane] = field(default_factory=set)
    stood_in: list[Lane] = field(default_factory=list)

    async def hash(self, password: str, *, lane: Lane = Lane.NEW_DEVICE) -> str:
        self._slot(lane)
        return f"hashed:{password}"

    async def verify(
        self,
        stored: str | None,
        password: str,
        *,
        lane: Lane = Lane.NEW_DEVICE,
        place: AdmittedPlace | None = None,
    ) -> bool:
        self._slot(lane)
        if place is not None:
            place.give_up()
        return stored == f"hashed:{password}"

    def _slot(self, lane: Lane) -> None:
        if lane in self.full:
            raise HashBudgetExhausted
        self.computed += 1
        self.lanes.append(lane)

    def needs_rehash(self, stored: str) -> bool:
        return False

    def has_room(self, lane: Lane) -> bool:
        return lane not in self.full

    def admit(self, lane: Lane) -> FakePlace | None:
        if lane in self.full:
            return None
        place = FakePlace()
        self.places.append(place)
        return place

    def typical_seconds(self) -> float:
        return 0.0

    async def stand_in(
        self, *, lane: Lane = Lane.NEW_DEVICE, place: AdmittedPlace | None = None
    ) -> None:
        if lane in self.full:
            raise HashBudgetExhausted
        self.stood_in.append(lane)
        if place is not None:
            place.give_up()


@dataclass
class FakeAdmission:
    policy: AdmissionPolicy = OPEN_POLICY
    countries: dict[str, str] = field(default_factory=dict)
    looked_up: list[str] = field(default_factory=list)

    def current(self) -> AdmissionPolicy:
        return self.policy

    def country_of(self, ip: str) -> str:
        self.looked_up.append(ip)
        return self.countries.get(ip, "")


@dataclass
class FakeSignInStore:
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    queued: list[FailedSignIn] = field(default_factory=list)
    lookups: int = 0

    async def login_candidate(self, login_key: str, proven: ProvenDevice | None) -> Any:
        self.lookups += 1
        return self.accounts.get(login_key)

    async def queue_failed_sign_in(self, failure: FailedSignIn) -> None:
        self.queued.append(failure)


class NoDatabase:
    """A refusal is decided before any transaction: touching the pool is a failure."""

    def acquire(self) -> Any:
        raise AssertionError("a refused sign-in must not open a transaction")


@dataclass
class SignIn:
    identity: Identity
    risk: FakeRisk
    hasher: FakeHasher
    store: FakeSignInStore
    admission: FakeAdmission

    def an_account(self, email: str, **overrides: Any) -> uuid.UUID:
        account_id = uuid.uuid4()
        self.store.accounts[email] = {
            "id": account_id,
            "status": "active",
            "password_hash": f"hashed:{PASSWORD}",
            "password_expired": False,
            "recent_failures": 0,
            "proof_fresh": False,
            "known_device": False,
            **overrides,
        }
        return account_id

    async def refused(
        self,
        identifier: str,
        password: str,
        *,
        client: common_pb2.ClientContext = CLIENT,
        device: DeviceKey | None = None,
    ) -> str:
        proof = device.proof("Login", identifier) if device is not None else ""
        with pytest.raises(Unauthenticated) as refusal:
            await self.identity.login(
                identifier=identifier, password=password, client=client, device_proof=proof
            )
        return refusal.value.reason


@pytest.fixture
def sign_in() -> SignIn:
    settings = load_settings(
        IdentitySettings,
        {
            "DATABASE_URL": "postgresql://unused/identity",
            "IDENTITY_SECRETS_KEY": base64.b64encode(bytes(32)).decode(),
        },
    )
    risk, hasher, store, admission = FakeRisk(), FakeHasher(), FakeSignInStore(), FakeAdmission()
    identity = Identity(
        pool=cast(Any, NoDatabase()),
        settings=settings,
        keys=cast(KeyRing, None),
        risk=risk,
        hasher=hasher,
        box=SecretBox(bytes(32)),
        pseudonyms=Pseudonyms(bytes(32)),
        sign_in_store=store,
        admission=admission,
    )
    return SignIn(identity, risk, hasher, store, admission)


@pytest.mark.parametrize("verdict", [RiskVerdict.DENY, RiskVerdict.THROTTLE])
async def test_a_denied_or_throttled_sign_in_is_refused_before_any_password_hash(
    sign_in: SignIn, verdict: RiskVerdict
):
    sign_in.an_account("hanako@example.jp")
    sign_in.risk.verdict = verdict

    assert await sign_in.refused("hanako@example.jp", PASSWORD) == "INVALID_CREDENTIALS"
    assert sign_in.hasher.computed == 0
    assert sign_in.store.queued == []


async def test_a_wrong_password_is_queued_against_its_account_for_after_the_answer(
    sign_in: SignIn,
):
    account_id = sign_in.an_account("hanako@example.jp")

    assert await sign_in.refused("Hanako@Example.JP", "guess") == "INVALID_CREDENTIALS"
    assert sign_in.store.queued == [
        FailedSignIn(account_id, "192.0.2.7", "unproven:laptop", "ua", expired_password=False)
    ]
    assert sign_in.risk.outcomes == [risk_pb2.OUTCOME_PASSWORD_WRONG]


async def test_an_unknown_identifier_costs_one_hash_and_one_queued_attempt_like_a_known_one(
    sign_in: SignIn,
):
    assert await sign_in.refused("nobody@example.jp", PASSWORD) == "INVALID_CREDENTIALS"
    assert sign_in.hasher.computed == 1
    assert [failure.account_id for failure in sign_in.store.queued] == [None]


async def test_a_locked_account_is_refused_even_with_the_right_password(sign_in: SignIn):
    account_id = sign_in.an_account("hanako@example.jp", status="locked")

    assert await sign_in.refused("hanako@example.jp", PASSWORD) == "INVALID_CREDENTIALS"
    assert [failure.account_id for failure in sign_in.store.queued] == [account_id]
    assert sign_in.risk.outcomes == [risk_pb2.OUTCOME_PASSWORD_WRONG]


async def test_an_expired_password_is_refused_like_a_wrong_one_and_queued_as_expired(
    sign_in: SignIn,
):
    account_id = sign_in.an_account("hanako@example.jp", password_expired=True)

    assert await sign_in.refused("hanako@example.jp", PASSWORD) == "INVALID_CREDENTIALS"
    assert sign_in.store.queued == [
        FailedSignIn(account_id, "192.0.2.7", "unproven:laptop", "ua", expired_password=True)
    ]
    # Risk hears the truth; only the caller gets the wrong password's answer.
    assert sign_in.risk.outcomes == [risk_pb2.OUTCOME_PASSWORD_OK]


def test_a_queued_failed_sign_in_reads_back_as_it_was_written():
    failure = FailedSignIn(uuid.uuid4(), "192.0.2.7", "phone", "ua", expired_password=True)
    assert FailedSignIn.from_payload(failure.payload()) == failure
    unknown = FailedSignIn(None, "192.0.2.7", "phone", "ua", expired_password=False)
    assert FailedSignIn.from_payload(unknown.payload()) == unknown


CONTAINED = common_pb2.ClientContext(ip_address="203.0.113.9", device_id="bot", user_agent="ua")


def contained(until: datetime) -> AdmissionPolicy:
    return AdmissionPolicy(
        version=2, contained_networks=Networks(["203.0.113.0/24"]), containment_until=until
    )


async def test_a_new_device_in_a_contained_network_is_refused_without_a_lookup_a_hash_or_risk(
    sign_in: SignIn,
):
    sign_in.an_account("hanako@example.jp")
    sign_in.admission.policy = contained(datetime.now(UTC) + timedelta(minutes=5))

    assert await sign_in.refused("hanako@example.jp", PASSWORD, client=CONTAINED) == (
        "INVALID_CREDENTIALS"
    )
    assert (sign_in.store.lookups, sign_in.hasher.computed, sign_in.risk.assessed) == (0, 0, 0)
    assert sign_in.store.queued == []
    # Risk was not asked, so it hears of the attempt as a failure: the wave stays visible.
    assert sign_in.risk.refusals == ["203.0.113.9"]


async def test_a_proven_key_the_account_does_not_know_is_refused_in_a_contained_network(
    sign_in: SignIn,
):
    sign_in.an_account("hanako@example.jp", proof_fresh=True, known_device=False)
    sign_in.admission.policy = contained(datetime.now(UTC) + timedelta(minutes=5))

    reason = await sign_in.refused(
        "hanako@example.jp", PASSWORD, client=CONTAINED, device=DeviceKey()
    )
    assert reason == "INVALID_CREDENTIALS"
    assert (sign_in.store.lookups, sign_in.hasher.computed, sign_in.risk.assessed) == (1, 0, 0)


async def test_a_known_device_in_a_contained_network_has_its_password_checked(sign_in: SignIn):
    sign_in.an_account("hanako@example.jp", proof_fresh=True, known_device=True)
    sign_in.admission.policy = contained(datetime.now(UTC) + timedelta(minutes=5))

    await sign_in.refused("hanako@example.jp", "a typo", client=CONTAINED, device=DeviceKey())
    assert sign_in.hasher.lanes == [Lane.KNOWN_DEVICE]
    assert sign_in.risk.assessed == 1 and sign_in.risk.refusals == []


async def test_a_containment_that_ended_refuses_nobody(sign_in: SignIn):
    sign_in.an_account("hanako@example.jp")
    sign_in.admission.policy = contained(datetime.now(UTC) - timedelta(seconds=1))

    await sign_in.refused("hanako@example.jp", "a typo", client=CONTAINED)
    assert sign_in.hasher.lanes == [Lane.NEW_DEVICE]


@pytest.mark.parametrize(
    ("policy", "address"),
    [
        (AdmissionPolicy(blocked_networks=Networks(["198.51.100.0/24"])), "198.51.100.20"),
        (AdmissionPolicy(blocked_countries=frozenset({"US"})), "192.0.2.50"),
    ],
    ids=["network", "country"],
)
async def test_a_blocked_network_or_country_is_refused_even_on_a_known_device(
    sign_in: SignIn, policy: AdmissionPolicy, address: str
):
    sign_in.an_account("hanako@example.jp", proof_fresh=True, known_device=True)
    sign_in.admission.policy = policy
    sign_in.admission.countries["192.0.2.50"] = "US"
    client = common_pb2.ClientContext(ip_address=address, device_id="phone", user_agent="ua")

    reason = await sign_in.refused("hanako@example.jp", PASSWORD, client=client, device=DeviceKey())
    assert reason == "INVALID_CREDENTIALS"
    assert (sign_in.store.lookups, sign_in.hasher.computed, sign_in.risk.assessed) == (0, 0, 0)


async def test_the_country_is_not_looked_up_while_no_country_is_blocked(sign_in: SignIn):
    await sign_in.refused("nobody@example.jp", PASSWORD)
    assert sign_in.admission.looked_up == []


async def test_a_full_strangers_lane_refuses_a_new_device_at_once_alike_for_any_identifier(
    sign_in: SignIn,
):
    sign_in.an_account("hanako@example.jp")
    sign_in.hasher.full = {Lane.NEW_DEVICE}

    for identifier in ("hanako@example.jp", "nobody@example.jp"):
        assert await sign_in.refused(identifier, PASSWORD) == "INVALID_CREDENTIALS"
    assert (sign_in.store.lookups, sign_in.hasher.computed, sign_in.risk.assessed) == (0, 0, 0)
    assert sign_in.store.queued == []


async def test_a_known_device_is_hashed_in_its_own_lane_while_the_strangers_lane_is_full(
    sign_in: SignIn,
):
    sign_in.an_account("hanako@example.jp", proof_fresh=True, known_device=True)
    sign_in.hasher.full = {Lane.NEW_DEVICE}

    await sign_in.refused("hanako@example.jp", "a typo", device=DeviceKey())
    assert sign_in.hasher.lanes == [Lane.KNOWN_DEVICE]


async def test_past_the_failure_cap_a_new_device_gets_no_hash_yet_is_answered_and_counted_as_a_wrong_password(  # noqa: E501
    sign_in: SignIn,
):
    account_id = sign_in.an_account("hanako@example.jp", recent_failures=MAX_CONSECUTIVE_FAILURES)

    assert await sign_in.refused("hanako@example.jp", PASSWORD) == "INVALID_CREDENTIALS"
    assert sign_in.hasher.computed == 0
    # It waited in the strangers' lane for a hash's time, then was counted and reported
    # as any wrong password is, as an identifier that names no account would be.
    assert sign_in.hasher.stood_in == [Lane.NEW_DEVICE]
    assert all(place.given_up for place in sign_in.hasher.places)
    assert [failure.account_id for failure in sign_in.store.queued] == [account_id]
    assert sign_in.risk.outcomes == [risk_pb2.OUTCOME_PASSWORD_WRONG]
    assert sign_in.risk.refusals == []


async def test_a_wave_that_begins_while_risk_is_asked_ends_a_strangers_attempt_before_its_hash(
    sign_in: SignIn,
):
    sign_in.an_account("hanako@example.jp")
    wave = AdmissionPolicy(
        containment_until=datetime.now(UTC) + timedelta(minutes=5),
        containment_alert_id="alert-1",
    )
    sign_in.risk.meanwhile = lambda: setattr(sign_in.admission, "policy", wave)

    assert await sign_in.refused("hanako@example.jp", PASSWORD) == "INVALID_CREDENTIALS"
    assert sign_in.risk.assessed == 1
    assert sign_in.hasher.computed == 0
    assert sign_in.hasher.places and all(place.given_up for place in sign_in.hasher.places)


async def test_past_the_failure_cap_the_accounts_known_device_still_has_its_password_checked(
    sign_in: SignIn,
):
    sign_in.an_account(
        "hanako@example.jp",
        recent_failures=MAX_CONSECUTIVE_FAILURES + 5,
        proof_fresh=True,
        known_device=True,
    )

    await sign_in.refused("hanako@example.jp", "a typo", device=DeviceKey())
    assert sign_in.hasher.lanes == [Lane.KNOWN_DEVICE]


async def test_one_failure_short_of_the_cap_a_new_device_is_still_hashed(sign_in: SignIn):
    sign_in.an_account("hanako@example.jp", recent_failures=MAX_CONSECUTIVE_FAILURES - 1)

    await sign_in.refused("hanako@example.jp", "a typo")
    assert sign_in.hasher.computed == 1


async def test_a_passkey_sign_in_from_a_blocked_network_ends_before_any_database_work(
    sign_in: SignIn,
):
    sign_in.admission.policy = AdmissionPolicy(blocked_networks=Networks(["198.51.100.0/24"]))
    client = common_pb2.ClientContext(ip_address="198.51.100.3", device_id="pc", user_agent="ua")

    with pytest.raises(Unauthenticated):
        await sign_in.identity.begin_passkey_login(identifier="", challenge_id=None, client=client)
    with pytest.raises(Unauthenticated):
        await sign_in.identity.finish_passkey_login(
            ceremony_id=uuid.uuid4(), assertion_json="{}", client=client
        )


async def test_a_stranger_keeps_its_place_in_the_lane_while_risk_is_asked_and_gives_it_up_after(
    sign_in: SignIn,
):
    sign_in.an_account("hanako@example.jp")
    sign_in.risk.verdict = RiskVerdict.THROTTLE

    await sign_in.refused("hanako@example.jp", PASSWORD)
    assert sign_in.risk.assessed == 1 and sign_in.hasher.computed == 0
    assert [place.given_up for place in sign_in.hasher.places] == [True]
