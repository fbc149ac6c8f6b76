"""Sign-in's refusals, with in-memory stand-ins for its ports: every one is the same
INVALID_CREDENTIALS, and what it leaves behind waits in the queue for after the answer."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

from services.identity.domain.login import FailedSignIn, RiskVerdict
from services.identity.domain.sealing import Pseudonyms, SecretBox
from services.identity.settings import IdentitySettings
from services.identity.use_cases import Identity
from services.identity.use_cases.keys import KeyRing
from services.runtime.config import load_settings
from services.runtime.device_proof import ProvenDevice
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

    async def assess_login(self, **_: Any) -> Verdict:
        return Verdict(self.verdict)

    async def assess_registration(self, **_: Any) -> Verdict:
        return Verdict(self.verdict)

    def record_outcome(self, outcome: risk_pb2.Outcome.ValueType, **_: Any) -> None:
        self.outcomes.append(outcome)


@dataclass
class FakeHasher:
    computed: int = 0

    async def hash(self, password: str) -> str:
        self.computed += 1
        return f"hashed:{password}"

    async def verify(self, stored: str | None, password: str) -> bool:
        self.computed += 1
        return stored == f"hashed:{password}"

    def needs_rehash(self, stored: str) -> bool:
        return False


@dataclass
class FakeSignInStore:
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    queued: list[FailedSignIn] = field(default_factory=list)

    async def login_candidate(self, login_key: str, proven: ProvenDevice | None) -> Any:
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

    async def refused(self, identifier: str, password: str) -> str:
        with pytest.raises(Unauthenticated) as refusal:
            await self.identity.login(identifier=identifier, password=password, client=CLIENT)
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
    risk, hasher, store = FakeRisk(), FakeHasher(), FakeSignInStore()
    identity = Identity(
        pool=cast(Any, NoDatabase()),
        settings=settings,
        keys=cast(KeyRing, None),
        risk=risk,
        hasher=hasher,
        box=SecretBox(bytes(32)),
        pseudonyms=Pseudonyms(bytes(32)),
        sign_in_store=store,
    )
    return SignIn(identity, risk, hasher, store)


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
