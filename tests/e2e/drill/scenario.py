"""The incident drill: the 2019 attack and the response to it, replayed end to end.

One scenario, parametrised by size, plays the story of ``docs/incident.md`` against the
four services running as separate processes (``LocalStack``, exactly what
`make run` starts), through the public gRPC contracts only, as the ``gateway``
(people and the attacker's app), ``pos`` (store registers) and ``operator``
principals, and through the mailbox of the local SMTP server:

1. Launch: people register, verify their email, enrol passkeys or an
   authenticator app, open wallets, register cards and top up; some only ever
   use a password (a few of them also sign in with an external ID). A chain
   merchant registers its stores.
2. The leak: an attacker replays a list of email/password pairs from many
   foreign and domestic IPs and fresh devices, then tries everything on each
   account where the password worked. Some victims also reused the password at
   their mail provider, so for them the attacker reads the registered inbox too.
   Meanwhile every legitimate person signs in and pays.
3. Detection and response: risk raises the stuffing alert by itself; an operator
   blocks the attacking countries, suspends card top-ups, sign-ups and
   external-ID sign-in, and each switch is probed until it holds.
4. Victims: a thief holding a fresh payment code from a stolen phone is at a
   register when the owner resets the password, and the capture is refused;
   people report "this wasn't me"; the victim query over the attacker's IPs and
   devices must name exactly the accounts the attacker reached, with the money
   moved; CompensateCase settles it and a re-run pays nothing.
5. Forced reset: every password is reset; each holder gets one notice at the
   registered address; every old session dies.
6. Wind-down: balances are paid out or listed as unclaimed; Reconcile balances.

``run_drill`` returns a ``DrillReport``: a timeline of phases with counts, the
kill-switch flips with their latency, and every check as (name, passed, detail).
A failed check's message names the control that broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as idp
from mamoru.identity.v1 import identity_pb2_grpc
from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.devstack.smtp import ReceivedMessage
from services.devstack.stack import LocalStack
from services.identity.device_proof import DeviceKey
from services.runtime.access import bearer_metadata
from tests.support.oidc import LocalOidcProvider
from tests.support.people import (
    IDENTITY_ENV,
    PASSWORD,
    TIMEOUT,
    IdentityDriver,
    Payer,
    Person,
    client,
    code_in,
    has_reset_link,
    home_address,
    jpy,
    next_totp,
    reset_token_in,
    session_methods,
    stack_channel,
    subject_is,
)

T = TypeVar("T")

OPERATOR = "duty-officer"
OPERATOR_METADATA = (("x-operator", OPERATOR),)
OPERATOR_ACTOR = f"operator:{OPERATOR}"
PROVIDER = "line"
ATTACKER_DOMAIN = "attacker.example"
MERCHANT_CATEGORY = "5411"  # grocery stores and supermarkets
# Prefixes whose /24s the bundled country data places in one country each.
FOREIGN_PREFIXES = {"CN": "36.110", "RU": "95.165", "VN": "14.160", "US": "8.8"}
DOMESTIC_PREFIXES = ("126.10", "153.128")
NEW_PASSWORD = "a brand new passphrase after the incident"
OWNERS_OWN_RESET_PASSWORD = "my phone was stolen at the register"
# Everything a session made stops working within this long of its revocation.
REVOCATION_DEADLINE_SECONDS = 5.0
TOBACCO_CARTON = 1_000
FORCED_RESET_SUBJECTS = ("パスワードの再設定が必要です", "please choose a new password")
WIND_DOWN_SUBJECTS = ("サービス終了", "the service is closing")
OPERATOR_ALERT_SUBJECTS = ("アラート", "alert")
OPERATOR_INBOX = "operators@mamoru.local"
ALERT_GRACE_SECONDS = 15.0
_FREEZE_LINK = re.compile(r"freeze-contact\?token=([A-Za-z0-9_\-]+)")


# Size -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillSize:
    """How big the story is. ``make test`` runs a small one, ``make drill`` a larger one."""

    people: int = 48
    passkey_share: float = 0.35
    totp_share: float = 0.35  # the rest only ever use a password
    external_id_people: int = 3  # password-only people who also sign in with LINE
    stores: int = 6
    attack_pairs: int = 260
    reused_pairs: int = 8  # pairs in the list whose password is right
    unknown_share: float = 0.3  # pairs for addresses that do not exist
    mailbox_compromised: int = 2  # of the reused: the attacker reads their inbox too
    attacker_ips: int = 36  # spread thinly, under the per-IP limits
    noisy_ips: int = 2  # hammer with many identifiers each, and get throttled
    noisy_attempts: int = 30
    domestic_share: float = 0.25
    reporters: int = 3
    attack_concurrency: int = 16
    people_concurrency: int = 8
    # Alert thresholds tuned for the size of the deployment (an operator setting);
    # None keeps the rule as shipped.
    stuffing_alert_failures: int | None = 120
    foreign_alert_attempts: int | None = 100
    switch_deadline_seconds: float = 10.0
    seed: int = 7


# Report ---------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    title: str
    started_at: float
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SwitchFlip:
    switch: str
    reason: str
    effective_after_seconds: float | None
    probe: str


# The control of docs/incident.md each check proves, by check name (a switch's
# checks share one, ``switch_effective:<switch>``).
CONTROLS = {
    "the_attack_was_real": "the drill's own premise: the leaked list holds right passwords",
    "password_only_session_gets_no_wallet_token": (
        "the group ID never moves money: wallet tokens need assurance level 2"
    ),
    "stuffing_throttled_by_risk": "risk scoring before any hash: per-IP and per-subnet limits",
    "new_device_needs_second_factor": "a second factor for every new device",
    "attacker_got_no_wallet_token": (
        "wallet tokens only for passkey or password-and-TOTP sessions on a registered"
        " device, outside the cool-off"
    ),
    "attacker_moved_no_money": "the wallet accepts only wallet-audience tokens",
    "legitimate_people_signed_in_during_attack": "defences that spare legitimate sign-ins",
    "legitimate_people_paid_during_attack": "defences that spare legitimate payments",
    "stuffing_alert_raised_without_a_call": "real-time detection: the stuffing alert",
    "operators_told_by_mail": "operator alerts delivered by mail",
    "switch_effective": "kill switches effective on every replica within seconds",
    "blocked_countries_refused": "country policy",
    "sign_ups_suspended": "the sign-up kill switch",
    "victims_found_exactly": "victim identification as a query over recorded events",
    "compensation_settles_and_reruns_change_nothing": (
        "compensation as idempotent ledger operations"
    ),
    "forced_reset_one_notice_each_at_the_registered_address": (
        "forced reset, each notice to the registered address only"
    ),
    "every_old_session_is_dead": "credential changes end every other session",
    "every_holder_told_of_wind_down": "wind-down: every holder is told",
    "every_balance_paid_out_or_listed": "wind-down: every balance paid out or listed unclaimed",
    "ledger_balances": "double-entry ledger, reconciled",
    "operator_actions_audited": "every operator action audited with who and why",
    "reset_links_only_to_registered_addresses": (
        "a reset reaches the registered address only; the reset API has no destination"
    ),
    "a_copied_device_is_a_new_device": (
        "a known device is proven by its key: a copied device id or proof is a new device"
    ),
    "payment_code_dies_with_the_owners_reset": (
        "whatever a session created dies with it: a payment code dies with the owner's reset"
    ),
}


def current_commit() -> str:
    """The commit the drill ran on (with ``+changes`` when the tree differs), or ''."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}+changes" if dirty else head


def control_of(check_name: str) -> str:
    return CONTROLS[check_name.split(":", 1)[0]]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    control: str  # the control the check proves
    failure: str = ""  # what broke, in words: only when the check failed


@dataclass
class DrillReport:
    size: DrillSize
    phases: list[Phase] = field(default_factory=list)
    switch_flips: list[SwitchFlip] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"the drill made no check named {name!r}")

    started_at: str = ""  # ISO 8601, UTC
    commit: str = ""

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    @property
    def verdict(self) -> str:
        """PASSED when every check held (and there were checks), else FAILED."""
        return "PASSED" if self.checks and not self.failures else "FAILED"

    def to_json(self) -> str:
        body = asdict(self)
        summary = {
            "verdict": self.verdict,
            "date": self.started_at,
            "commit": self.commit,
            "checks_held": sum(check.passed for check in self.checks),
            "checks_made": len(self.checks),
        }
        return json.dumps({**summary, **body}, ensure_ascii=False, indent=2)

    def timeline(self) -> str:
        """The report as a person reads it."""
        size = self.size
        lines = [
            f"Incident drill {self.verdict}: {self.started_at or 'not started'},"
            f" commit {self.commit or 'unknown'}",
            f"{size.people} people, {size.attack_pairs} leaked pairs, "
            f"{size.attacker_ips + size.noisy_ips} attacker IPs in the replay "
            f"({size.attacker_ips} spread thin, {size.noisy_ips} noisy) "
            f"({self.seconds:.0f} s)",
        ]
        leak = next((phase for phase in self.phases if phase.name == "leak"), None)
        if leak is not None:
            lines.append(
                f"Bottom line: {leak.counts.get('passwords_found', 0)} right passwords in the "
                f"list, {leak.counts.get('group_id_takeovers', 0)} group IDs reached (through "
                f"the victims' own inboxes), {leak.counts.get('wallet_takeovers', 0)} wallets "
                f"taken over, {leak.counts.get('yen_moved_by_attacker', 0):,} yen lost"
            )
        lines.append("")
        for phase in self.phases:
            lines.append(f"[+{phase.started_at:6.1f} s] {phase.title}  ({phase.seconds:.1f} s)")
            for name, value in phase.counts.items():
                lines.append(f"      {name.replace('_', ' '):<44} {value:>10,}")
            lines.extend(f"      - {note}" for note in phase.notes)
            if phase.name == "response":
                for flip in self.switch_flips:
                    after = (
                        f"effective after {flip.effective_after_seconds:.2f} s"
                        if flip.effective_after_seconds is not None
                        else "NOT APPLIED"
                    )
                    lines.append(f"      switch {flip.switch:<32} {after}  ({flip.probe})")
            lines.append("")
        passed = sum(check.passed for check in self.checks)
        lines.append(f"Checks: {passed} of {len(self.checks)} held")
        for check in self.checks:
            mark = "ok  " if check.passed else "FAIL"
            lines.append(f"  {mark} {check.name} ({check.control}): {check.detail}")
            if not check.passed:
                lines.append(f"       {check.failure}")
        lines.append(f"Verdict: {self.verdict}")
        return "\n".join(lines)


class Timeline:
    def __init__(self, report: DrillReport, progress: Callable[[str], None]) -> None:
        self.report = report
        self.progress = progress
        self.origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.origin

    @contextlib.asynccontextmanager
    async def phase(self, name: str, title: str) -> AsyncIterator[Phase]:
        phase = Phase(name=name, title=title, started_at=round(self.now(), 2))
        self.report.phases.append(phase)
        self.progress(f"[+{phase.started_at:6.1f} s] {title} ...")
        begun = time.monotonic()
        try:
            yield phase
        finally:
            phase.seconds = round(time.monotonic() - begun, 2)


# gRPC helpers ---------------------------------------------------------------------


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a refusal (empty when it carries none)."""
    status = rpc_status.from_call(error)
    if status is None:
        return ""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


async def refusal(call: Awaitable[Any]) -> grpc.aio.AioRpcError | None:
    """None when the call succeeded, else its error."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    return None


def describe(error: grpc.aio.AioRpcError | None) -> str:
    if error is None:
        return "accepted"
    reason = reason_of(error)
    return f"{error.code().name}{'/' + reason if reason else ''}"


async def each(items: Iterable[T], work: Callable[[T], Awaitable[None]], limit: int) -> None:
    """Run ``work`` on every item, at most ``limit`` at once; the first failure propagates."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> None:
        async with gate:
            await work(item)

    await asyncio.gather(*(one(item) for item in items))


def now_timestamp(offset_seconds: float = 0) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int((time.time() + offset_seconds) * 1e9))
    return stamp


async def until(
    probe: Callable[[], Awaitable[bool]], within: float, every: float = 0.1
) -> float | None:
    """Seconds until ``probe`` is true, or None when it never was within ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await probe():
            return time.monotonic() - started
        await asyncio.sleep(every)
    return None


# The cast -------------------------------------------------------------------------


@dataclass
class Member:
    """One legitimate person of the drill and what the drill knows of their money."""

    index: int
    kind: str  # "passkey", "totp" or "password"
    person: Person
    external_subject: str = ""
    payer: Payer | None = None
    card_id: str = ""
    wallet_id: str = ""
    balance: int = 0
    wallet_tokens: list[str] = field(default_factory=list)
    sessions: list[idp.SessionTokens] = field(default_factory=list)

    @property
    def has_wallet(self) -> bool:
        return self.kind != "password"


@dataclass
class Pair:
    email: str
    password: str
    member: Member | None  # None: the address does not exist


@dataclass(frozen=True)
class Found:
    """A pair whose password worked: identity asked for a second factor."""

    pair: Pair
    challenge_id: str
    device: str
    ip: str
    methods: tuple[int, ...]

    @property
    def email_code_offered(self) -> bool:
        return idp.CHALLENGE_METHOD_EMAIL_CODE in self.methods


@dataclass
class Attacker:
    """What the attacker holds and what they got."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ips: list[str] = field(default_factory=list)
    noisy: list[str] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    discovered: list[Found] = field(default_factory=list)
    reached: set[str] = field(default_factory=set)  # accounts with an attacker's session
    sessions: list[idp.SessionTokens] = field(default_factory=list)
    wallet_tokens: list[str] = field(default_factory=list)
    yen_moved: int = 0
    addresses: set[str] = field(default_factory=set)
    # The attacker's own machines prove their own keys: new devices, never the victim's.
    device_keys: dict[str, DeviceKey] = field(default_factory=dict)

    def device(self) -> str:
        device = f"atk-{secrets.token_hex(6)}"
        self.devices.add(device)
        return device

    def proof(self, device: str, rpc: str, bound: str) -> str:
        """A proof by the attacker's own key for ``device``."""
        key = self.device_keys.setdefault(device, DeviceKey())
        return key.proof(rpc, bound)

    def fresh_ip(self) -> str:
        """Another address of the botnet, at home, under every per-IP limit so far."""
        prefix = DOMESTIC_PREFIXES[len(self.ips) % len(DOMESTIC_PREFIXES)]
        ip = f"{prefix}.{240 + len(self.ips) % 10}.{secrets.randbelow(240) + 2}"
        self.ips.append(ip)
        return ip

    def address(self, label: str) -> str:
        address = f"{label}-{secrets.token_hex(3)}@{ATTACKER_DOMAIN}"
        self.addresses.add(address)
        return address

    def forged_token(self, subject: str, audience: str) -> str:
        """A token signed with the attacker's own key, claiming a strong session."""
        now = int(time.time())
        claims = {
            "sub": subject, "aud": audience, "iss": "mamoru-identity", "sid": str(uuid.uuid4()),
            "cnf": {"jkt": DeviceKey().thumbprint}, "amr": ["passkey"], "acr": "2",
            "auth_time": now, "iat": now,
            "exp": now + 300, "jti": str(uuid.uuid4()),
        }  # fmt: skip
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "stolen"})


class Register:
    """A store's register: it sends the merchant key with every call."""

    def __init__(self, stub: Any, merchant_key: str, store_id: str) -> None:
        self.stub = stub
        self.metadata = (("x-merchant-key", merchant_key),)
        self.store_id = store_id

    async def capture(
        self, code: str, amount: int, basket: Sequence[risk_pb2.GoodsCategory.ValueType]
    ) -> wallet_pb2.Payment:
        reply = await self.stub.CapturePayment(
            wallet_pb2.CapturePaymentRequest(
                code=code,
                amount=jpy(amount),
                store_id=self.store_id,
                basket_categories=list(basket),
                idempotency_key=str(uuid.uuid4()),
            ),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        payment: wallet_pb2.Payment = reply.payment
        return payment


# The stack ------------------------------------------------------------------------


@contextlib.contextmanager
def _own_database() -> Iterator[None]:
    """Ignore DATABASE_URL for the stack: it starts and releases an embedded server."""
    configured = os.environ.pop("DATABASE_URL", None)
    try:
        yield
    finally:
        if configured is not None:
            os.environ["DATABASE_URL"] = configured


class DrillStack(LocalStack):
    """``LocalStack`` on a PostgreSQL of its own, always: the drill plays a launch from
    an empty system and ends in wind-down, so it must never share databases with
    `make run`, an earlier drill or a server named by DATABASE_URL."""

    async def start(self) -> None:
        with _own_database():
            try:
                await super().start()
            except RuntimeError:
                # Free ports are picked before the services bind them, and on a shared
                # machine another process may take one first: once more, on new ports.
                await super().stop()
                self.processes.clear()
                await super().start()

    async def stop(self) -> None:
        with _own_database():
            await super().stop()


def drill_environment(provider: LocalOidcProvider, log_level: str = "warning") -> dict[str, str]:
    return {
        **IDENTITY_ENV,
        "IDENTITY_OIDC_PROVIDERS": provider.config(PROVIDER),
        # Alerts evaluated every second, so detection shows within the short wave.
        "RISK_ALERT_INTERVAL_SECONDS": "1",
        # A launch day and an attack wave squeezed into a minute on a shared
        # 2-core machine: risk answers slower than in production, and the drill
        # is about the controls, not the risk-unavailable fallbacks (tested apart).
        "IDENTITY_RISK_TIMEOUT_SECONDS": "3",
        "WALLET_RISK_TIMEOUT_SECONDS": "3",
        "LOG_LEVEL": log_level,
    }


@contextlib.asynccontextmanager
async def drill_stack(
    var_dir: Path, *, log_level: str = "warning", extra_env: dict[str, str] | None = None
) -> AsyncIterator[tuple[DrillStack, LocalOidcProvider]]:
    """The four services, SMTP, the card sandbox and a LINE-like ID provider; the
    services log at ``log_level`` into ``var_dir/logs``."""
    provider = LocalOidcProvider()
    await provider.start()
    stack = DrillStack(
        var_dir=var_dir,
        log_dir=var_dir / "logs",
        extra_env={**drill_environment(provider, log_level), **(extra_env or {})},
    )
    try:
        async with stack:
            yield stack, provider
    finally:
        await provider.stop()


# The drill ------------------------------------------------------------------------


class Drill:
    def __init__(
        self,
        stack: LocalStack,
        provider: LocalOidcProvider,
        size: DrillSize,
        progress: Callable[[str], None],
    ) -> None:
        self.stack = stack
        self.provider = provider
        self.size = size
        self.rng = random.Random(size.seed)
        self.report = DrillReport(size=size)
        self.timeline = Timeline(self.report, progress)
        self.progress = progress
        assert stack.smtp is not None and stack.card_processor is not None
        self.mailbox = stack.smtp
        self.processor = stack.card_processor
        self.run_tag = secrets.token_hex(3)
        self.channels: list[grpc.aio.Channel] = []
        self.identity = identity_pb2_grpc.IdentityServiceStub(self._channel("identity", "gateway"))
        self.identity_channel = self.channels[-1]
        self.identity_operator = identity_pb2_grpc.IdentityServiceStub(
            self._channel("identity", "operator")
        )
        self.wallet = wallet_pb2_grpc.WalletServiceStub(self._channel("wallet", "gateway"))
        self.wallet_operator = wallet_pb2_grpc.WalletServiceStub(
            self._channel("wallet", "operator")
        )
        self.pos = wallet_pb2_grpc.WalletServiceStub(self._channel("wallet", "pos"))
        self.risk = risk_pb2_grpc.RiskServiceStub(self._channel("risk", "operator"))
        self.people = IdentityDriver(self.identity, self.mailbox, operator=self.identity_operator)
        self.members: list[Member] = []
        self.registers: list[Register] = []
        self.attacker = Attacker()
        self.attack_started_wall = 0.0
        self.alert_seen_at: float | None = None
        self.operator_actions: list[tuple[str, str]] = []  # (what, reason)
        self.facts: dict[str, Any] = {}

    def _channel(self, name: str, principal: str) -> grpc.aio.Channel:
        channel = stack_channel(self.stack, name, as_=principal)
        self.channels.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    def checked(self, name: str, passed: bool, detail: str, broken: str) -> None:
        """Record a check; ``broken`` says what a failure means, kept only on failure."""
        failure = "" if passed else f"{broken} [{name}]: {detail}"
        self.report.checks.append(Check(name, bool(passed), detail, control_of(name), failure))

    async def run(self) -> DrillReport:
        started = time.monotonic()
        self.report.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.report.commit = current_commit()
        try:
            await self.launch()
            await self.leak()
            await self.response()
            await self.victims()
            await self.forced_reset()
            await self.wind_down()
            await self.audit()
        finally:
            self.report.seconds = round(time.monotonic() - started, 1)
            await self.close()
        return self.report

    # 1. Launch ------------------------------------------------------------------

    async def launch(self) -> None:
        size = self.size
        async with self.timeline.phase("launch", "1. Launch: people sign up and top up") as phase:
            await self._tune_alerts()
            merchant = await self.wallet_operator.RegisterMerchant(
                wallet_pb2.RegisterMerchantRequest(name="Mamoru Mart", category=MERCHANT_CATEGORY),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            for number in range(size.stores):
                shop = await self.wallet_operator.RegisterStore(
                    wallet_pb2.RegisterStoreRequest(
                        merchant_id=merchant.merchant.merchant_id,
                        store_code=f"store-{number:04d}",
                        name=f"Mamoru Mart {number + 1}",
                    ),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
                self.registers.append(Register(self.pos, merchant.merchant_key, shop.store_id))
            passkeys = round(size.people * size.passkey_share)
            totps = round(size.people * size.totp_share)
            kinds = ["passkey"] * passkeys + ["totp"] * totps
            kinds += ["password"] * (size.people - len(kinds))
            self.rng.shuffle(kinds)
            password_only = [i for i, kind in enumerate(kinds) if kind == "password"]
            linked = set(password_only[: size.external_id_people])
            refused_wallet: list[str] = []
            issued_wallet: list[str] = []

            inbox_leaned: list[str] = []

            async def onboard(index: int) -> None:
                kind = kinds[index]
                email = f"person{index:04d}-{self.run_tag}@example.jp"
                person = await self.people.register(email, device=f"phone-{index:04d}")
                member = Member(index=index, kind=kind, person=person)
                self.members.append(member)
                session = await self.people.sign_in(person)
                if kind == "passkey":
                    await self.people.enrol_passkey(person, session)
                elif kind == "totp":
                    await self.people.enrol_totp(person, session)
                if member.has_wallet:
                    await self._open_wallet(member)
                    return
                # The app offers the wallet to everyone; a password is not enough for it.
                for attempt in ("as signed in", "after a password step-up"):
                    if attempt != "as signed in":
                        session = await self.people.step_up(person, session)
                    error = await refusal(
                        self.identity.ExchangeToken(
                            self.people.exchange_request(person, session),
                            metadata=bearer_metadata(session.access_token),
                            timeout=TIMEOUT,
                        )
                    )
                    if error is None:
                        issued_wallet.append(f"{email} ({attempt})")
                    else:
                        refused_wallet.append(describe(error))
                if index in linked:
                    await self._link_when_allowed(member, session, inbox_leaned)

            await each(range(size.people), onboard, size.people_concurrency)
            self.members.sort(key=lambda member: member.index)
            phase.counts.update(
                people=len(self.members),
                with_passkey=sum(m.kind == "passkey" for m in self.members),
                with_authenticator_app=sum(m.kind == "totp" for m in self.members),
                password_only=sum(m.kind == "password" for m in self.members),
                with_external_id=sum(bool(m.external_subject) for m in self.members),
                external_id_refused_after_an_inbox_code=len(inbox_leaned),
                wallets=sum(bool(m.wallet_id) for m in self.members),
                stores=len(self.registers),
                yen_topped_up=sum(m.balance for m in self.members),
            )
            phase.notes.append(
                f"password-only sessions asking for a wallet token: {len(refused_wallet)} refused "
                f"({', '.join(sorted(set(refused_wallet))) or 'none'}), {len(issued_wallet)} issued"
            )
        self.checked(
            "password_only_session_gets_no_wallet_token",
            not issued_wallet and bool(refused_wallet),
            f"{len(issued_wallet)} issued: {issued_wallet[:3]}"
            if issued_wallet
            else f"all {len(refused_wallet)} requests refused",
            "wallet token issued to a password-only session: the group ID moved money",
        )

    async def _tune_alerts(self) -> None:
        for rule_id, threshold, value in (
            ("alert.stuffing_wave", "min_failures", self.size.stuffing_alert_failures),
            ("alert.foreign_ip_surge", "min_attempts", self.size.foreign_alert_attempts),
        ):
            if value is None:
                continue
            reason = f"sized for a deployment of {self.size.people} people"
            await self.risk.UpdateRule(
                risk_pb2.UpdateRuleRequest(
                    rule_id=rule_id, thresholds={threshold: float(value)}, reason=reason
                ),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            self.operator_actions.append((f"rule {rule_id}", reason))

    async def _open_wallet(self, member: Member) -> None:
        payer = await self.people.payer(member.person, self.wallet)
        wallet = await payer.enroll()
        number = f"4{member.index:015d}"
        token, three_ds = self.processor.tokenise(number)
        card = await payer.register_card(token, three_ds)
        amount = self.rng.randrange(3_000, 9_001, 500)
        await payer.top_up_from_card(card.funding_source_id, amount)
        member.payer = payer
        member.card_id = card.funding_source_id
        member.wallet_id = wallet.wallet_id
        member.balance += amount
        member.wallet_tokens.append(payer.token)
        if member.person.session is not None:
            member.sessions.append(member.person.session)

    async def _link_when_allowed(
        self, member: Member, session: idp.SessionTokens, inbox_leaned: list[str]
    ) -> None:
        """Link the member's LINE ID, as the app offers after sign-in.

        When risk does not answer a sign-in in time (a busy machine, or a drill that
        makes risk slow on purpose), a password-only person gets an email code, and
        identity rightly refuses to link an external ID to a session that leaned on
        the inbox. Signing in again would need the inbox again (and more codes than
        notify sends in a row), so the person stays unlinked and the report says so.
        """
        if "email_code" in session_methods(session):
            inbox_leaned.append(member.person.email)
            return
        subject = f"line-{self.run_tag}-{member.index}"
        await self._link_external(session, subject)
        member.external_subject = subject

    async def _link_external(self, session: idp.SessionTokens, subject: str) -> None:
        begun = await self.identity.BeginExternalLogin(
            idp.BeginExternalLoginRequest(provider=PROVIDER, client=client()), timeout=TIMEOUT
        )
        await self.identity.LinkExternalIdentity(
            idp.LinkExternalIdentityRequest(
                provider=PROVIDER,
                id_token=self.provider.id_token(subject, begun.nonce),
                nonce=begun.nonce,
            ),
            metadata=bearer_metadata(session.access_token),
            timeout=TIMEOUT,
        )

    async def _external_login(self, subject: str, where: common_pb2.ClientContext) -> Any:
        begun = await self.identity.BeginExternalLogin(
            idp.BeginExternalLoginRequest(provider=PROVIDER, client=where), timeout=TIMEOUT
        )
        return await self.identity.ExternalLogin(
            idp.ExternalLoginRequest(
                provider=PROVIDER,
                id_token=self.provider.id_token(subject, begun.nonce),
                nonce=begun.nonce,
                client=where,
            ),
            timeout=TIMEOUT,
        )

    # 2. The leak ------------------------------------------------------------------

    def _leaked_list(self) -> list[Pair]:
        size = self.size
        reused = self.rng.sample(self.members, min(size.reused_pairs, len(self.members)))
        pairs = [Pair(m.person.email, m.person.password, m) for m in reused]
        unknown = round(size.attack_pairs * size.unknown_share)
        for number in range(unknown):
            pairs.append(
                Pair(f"gone{number:05d}-{self.run_tag}@example.jp", "hunter2hunter2", None)
            )
        while len(pairs) < size.attack_pairs:
            member = self.rng.choice(self.members)
            # Passwords these people used elsewhere, never here.
            wrong = f"{self.rng.choice(['Summer', 'Tokyo', 'Sakura'])}{self.rng.randrange(9999)}!"
            pairs.append(Pair(member.person.email, wrong, member))
        self.rng.shuffle(pairs)
        return pairs

    def _attacker_ips(self) -> None:
        size = self.size
        domestic = round(size.attacker_ips * size.domestic_share)
        countries = list(FOREIGN_PREFIXES.values())
        for number in range(size.attacker_ips + size.noisy_ips):
            if number < domestic:
                prefix = DOMESTIC_PREFIXES[number % len(DOMESTIC_PREFIXES)]
            else:
                prefix = countries[number % len(countries)]
            ip = f"{prefix}.{(number * 7) % 250 + 1}.{self.rng.randrange(2, 250)}"
            (self.attacker.ips if number < size.attacker_ips else self.attacker.noisy).append(ip)

    async def leak(self) -> None:
        size = self.size
        attacker = self.attacker
        self._attacker_ips()
        pairs = self._leaked_list()
        # Most of the list goes through many IPs a few at a time; the noisy proxies
        # take a large share each.
        plan: list[tuple[Pair, str]] = []
        noisy_share = min(len(pairs), size.noisy_ips * size.noisy_attempts)
        for number, pair in enumerate(pairs):
            if number < noisy_share and attacker.noisy:
                ip = attacker.noisy[number % len(attacker.noisy)]
            else:
                ip = attacker.ips[number % len(attacker.ips)]
            plan.append((pair, ip))
        self.rng.shuffle(plan)
        async with self.timeline.phase("leak", "2. The leak: the list is replayed") as phase:
            self.attack_started_wall = time.time() - 5
            wave_started = self.timeline.now()
            watcher = asyncio.create_task(self._watch_alerts(wave_started))
            legit = asyncio.create_task(self._legitimate_use_during_attack())

            async def attempt(item: tuple[Pair, str]) -> None:
                pair, ip = item
                device = attacker.device()
                attacker.counts["sign-in attempts"] += 1
                try:
                    reply = await self.identity.Login(
                        idp.LoginRequest(
                            identifier=pair.email,
                            password=pair.password,
                            client=client(device, ip),
                            device_proof=attacker.proof(device, "Login", pair.email),
                        ),
                        timeout=TIMEOUT,
                    )
                except grpc.aio.AioRpcError as error:
                    attacker.counts[f"refused: {describe(error)}"] += 1
                    return
                if reply.HasField("session"):
                    attacker.counts["group sessions without a second factor"] += 1
                    attacker.sessions.append(reply.session)
                    if pair.member is not None:
                        attacker.reached.add(pair.member.person.account_id)
                    return
                attacker.counts["challenged for a second factor"] += 1
                attacker.discovered.append(
                    Found(pair, reply.challenge.challenge_id, device, ip,
                          tuple(reply.challenge.methods))
                )  # fmt: skip

            await each(plan, attempt, size.attack_concurrency)
            replay_ips = len(attacker.ips) + len(attacker.noisy)
            replay_seconds = self.timeline.now() - wave_started
            legit_result = await legit
            await self._exploit()
            # Alerts are evaluated every second; a few more after the wave is plenty.
            try:
                alert = await asyncio.wait_for(watcher, timeout=ALERT_GRACE_SECONDS)
            except TimeoutError:
                alert = None
            decisions = await self._risk_verdicts_for_attacker()
            phase.counts.update(
                leaked_pairs=len(pairs),
                attacker_ips_in_replay=replay_ips,
                # Fresh addresses the attacker took for the accounts it broke into.
                attacker_ips_after_the_replay=len(attacker.ips) + len(attacker.noisy) - replay_ips,
                attempts=attacker.counts["sign-in attempts"],
                throttled_or_denied_by_risk=decisions["throttle"] + decisions["deny"],
                challenged_by_risk=decisions["challenge"],
                passwords_found=len(attacker.discovered),
                second_factor_prompts_reached=attacker.counts["challenged for a second factor"],
                group_id_takeovers=len(attacker.reached),
                wallet_takeovers=len(attacker.wallet_tokens),
                yen_moved_by_attacker=attacker.yen_moved,
                legitimate_sign_ins=legit_result["signed_in"],
                legitimate_payments=legit_result["paid"],
            )
            phase.notes.append(f"replay of the list took {replay_seconds:.1f} s")
            for what, count in sorted(attacker.counts.items()):
                phase.notes.append(f"attacker: {what}: {count}")
            if alert is not None:
                phase.notes.append(f"risk raised {alert} by itself, no call needed")
        self.facts["decisions"] = decisions
        self._leak_checks(decisions, legit_result)

    def _leak_checks(self, decisions: Counter[str], legit: dict[str, Any]) -> None:
        attacker = self.attacker
        mailbox = self.facts["mailbox_victims"]
        # An open inbox only helps where identity offers a code to it.
        inbox_useful = any(found.email_code_offered for found in attacker.discovered)
        self.checked(
            "the_attack_was_real",
            bool(attacker.discovered)
            and (not self.size.mailbox_compromised or not inbox_useful or bool(mailbox)),
            f"{len(attacker.discovered)} right passwords found, {len(mailbox)} inboxes open",
            "the drill's attacker found no right password, so the drill proved nothing",
        )
        self.checked(
            "stuffing_throttled_by_risk",
            decisions["throttle"] + decisions["deny"] > 0,
            f"risk verdicts on the attacker's IPs: {dict(decisions)}",
            "risk did not throttle the replay: per-IP and per-subnet sign-in limits are off",
        )
        self.checked(
            "new_device_needs_second_factor",
            attacker.counts["group sessions without a second factor"] == 0,
            f"{attacker.counts['group sessions without a second factor']} sessions from a "
            "password alone on a fresh device",
            "a new device signed in with the password alone: the second factor is not asked",
        )
        posed = {what: n for what, n in attacker.counts.items() if what.startswith("posing as")}
        self.checked(
            "a_copied_device_is_a_new_device",
            bool(posed) and not any(what.endswith(": session") for what in posed),
            f"the victim's phone copied: {posed}",
            "a copied device id or replayed device proof signed in with the password alone: "
            "a known device is only a string",
        )
        self.checked(
            "attacker_got_no_wallet_token",
            not attacker.wallet_tokens,
            f"{len(attacker.wallet_tokens)} wallet-audience tokens in the attacker's hands",
            "wallet token issued to the attacker's session (email code, external ID, or inside "
            "the cool-off): the group ID moved money",
        )
        self.checked(
            "attacker_moved_no_money",
            attacker.yen_moved == 0,
            f"{attacker.yen_moved} yen moved by the attacker",
            "the attacker moved money: the wallet accepted a stolen session",
        )
        self.checked(
            "legitimate_people_signed_in_during_attack",
            not legit["sign_in_failures"],
            f"{legit['signed_in']} of {legit['tried']} signed in; failures: "
            f"{legit['sign_in_failures'][:3]}",
            "legitimate people could not sign in during the attack: the defence locked out "
            "the people it protects",
        )
        self.checked(
            "legitimate_people_paid_during_attack",
            not legit["payment_failures"],
            f"{legit['paid']} of {legit['wallets']} paid; "
            f"failures: {legit['payment_failures'][:3]}",
            "legitimate people could not pay during the attack: the defence stopped real payments",
        )

    async def _watch_alerts(self, wave_started: float) -> str | None:
        """The operator's screen: alerts risk raises by itself during the wave."""
        while True:
            reply = await self.risk.ListAlerts(
                risk_pb2.ListAlertsRequest(), metadata=OPERATOR_METADATA, timeout=TIMEOUT
            )
            for alert in reply.alerts:
                if alert.rule_id == "alert.stuffing_wave":
                    self.alert_seen_at = self.timeline.now() - wave_started
                    return f"{alert.rule_id} at +{self.alert_seen_at:.1f} s into the wave"
            await asyncio.sleep(0.5)

    async def _risk_verdicts_for_attacker(self) -> Counter[str]:
        """What risk decided on the attacker's attempts, from its stored decisions."""
        verdicts: Counter[str] = Counter()
        since = Timestamp(seconds=int(self.attack_started_wall))
        for ip in [*self.attacker.ips, *self.attacker.noisy]:
            token = ""
            while True:
                reply = await self.risk.ListDecisions(
                    risk_pb2.ListDecisionsRequest(
                        ip_address=ip,
                        since=since,
                        page=common_pb2.PageRequest(page_size=500, page_token=token),
                    ),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
                for record in reply.decisions:
                    if record.kind == "login":
                        name = risk_pb2.Verdict.Name(record.decision.verdict)
                        verdicts[name.removeprefix("VERDICT_").lower()] += 1
                token = reply.next_page_token
                if not token:
                    break
        return verdicts

    async def _legitimate_use_during_attack(self) -> dict[str, Any]:
        """Every person signs in as usual while the wave runs; wallet holders pay."""
        result: dict[str, Any] = {
            "tried": 0,
            "signed_in": 0,
            "paid": 0,
            "wallets": 0,
            "sign_in_failures": [],
            "payment_failures": [],
        }

        async def go_shopping(member: Member) -> None:
            person = member.person
            result["tried"] += 1
            try:
                session = await self.people.sign_in(person)
                member.sessions.append(session)
                if member.external_subject:
                    external = await self._external_login(
                        member.external_subject, client(person.device, person.ip)
                    )
                    member.sessions.append(external.session)
            except (grpc.aio.AioRpcError, TimeoutError, AssertionError) as error:
                result["sign_in_failures"].append(f"{person.email}: {_why(error)}")
                return
            result["signed_in"] += 1
            if not member.has_wallet:
                return
            result["wallets"] += 1
            try:
                payer = await self.people.payer(person, self.wallet)
                member.payer = payer
                member.wallet_tokens.append(payer.token)
                amount = self.rng.randrange(300, 1_501, 100)
                register = self.rng.choice(self.registers)
                await register.capture(
                    await payer.payment_code(), amount, [risk_pb2.GOODS_CATEGORY_FOOD]
                )
                member.balance -= amount
                result["paid"] += 1
            except (grpc.aio.AioRpcError, TimeoutError, AssertionError) as error:
                result["payment_failures"].append(f"{person.email}: {_why(error)}")

        await each(list(self.members), go_shopping, self.size.people_concurrency)
        return result

    async def _exploit(self) -> None:
        """For every account where the password worked, try everything."""
        attacker = self.attacker
        # Victims who reused the password at their mail provider too, among those
        # whose sign-in offers a code to the inbox.
        mailbox_victims = [f for f in attacker.discovered if f.email_code_offered][
            : self.size.mailbox_compromised
        ]
        self.facts["mailbox_victims"] = [found.pair.email for found in mailbox_victims]

        async def exploit(found: Found) -> None:
            member = found.pair.member
            assert member is not None
            where = client(found.device, found.ip)
            if not (
                found in mailbox_victims
                and await self._exploit_with_mailbox(member, found.challenge_id, where)
            ):
                await self._exploit_blind(member, found.challenge_id, where)
            await self._reset_with_own_address(member, where)
            await self._without_a_session(member, where)
            await self._pose_as_the_victims_phone(member)

        await each(list(attacker.discovered), exploit, 4)

    async def _pose_as_the_victims_phone(self, member: Member) -> None:
        """The victim's phone as a log line or a token shows it (its label, its key's
        thumbprint) and a proof it really sent, copied: with the right password, none
        of them may pass for the phone."""
        attacker, person = self.attacker, member.person
        seen = person.proof("Login", person.email)
        # The victim signs in from the phone; what it sent is then copied.
        await refusal(
            self.identity.Login(
                idp.LoginRequest(
                    identifier=person.email,
                    password=person.password,
                    client=client(person.device, person.ip),
                    device_proof=seen,
                ),
                timeout=TIMEOUT,
            )
        )
        for what, label, proof in (
            ("the phone's device id", person.device, ""),
            ("the phone's key thumbprint as a device id", person.key().thumbprint, ""),
            ("a proof the phone sent, replayed", person.device, seen),
        ):
            try:
                reply = await self.identity.Login(
                    idp.LoginRequest(
                        identifier=person.email,
                        password=person.password,
                        client=client(label, attacker.fresh_ip()),
                        device_proof=proof,
                    ),
                    timeout=TIMEOUT,
                )
            except grpc.aio.AioRpcError as error:
                outcome = describe(error)
            else:
                outcome = "session" if reply.HasField("session") else "second factor asked"
                if reply.HasField("session"):
                    attacker.sessions.append(reply.session)
                    attacker.reached.add(person.account_id)
            attacker.counts[f"posing as the victim's phone ({what}): {outcome}"] += 1

    async def _exploit_blind(
        self, member: Member, challenge_id: str, where: common_pb2.ClientContext
    ) -> None:
        """No inbox: ask for the email code and guess it, guess a recovery code."""
        attacker = self.attacker
        await refusal(
            self.identity.SendSignInCode(
                idp.SendSignInCodeRequest(challenge_id=challenge_id), timeout=TIMEOUT
            )
        )
        for answer in (
            {"email_code": f"{self.rng.randrange(10**6):06d}"},
            {"email_code": f"{self.rng.randrange(10**6):06d}"},
            {"recovery_code": secrets.token_hex(5)},
            {"totp_code": f"{self.rng.randrange(10**6):06d}"},
        ):
            attacker.counts["second-factor guesses"] += 1
            error = await refusal(
                self.identity.VerifySecondFactor(
                    idp.VerifySecondFactorRequest(
                        challenge_id=challenge_id,
                        client=where,
                        device_proof=attacker.proof(
                            where.device_id, "VerifySecondFactor", challenge_id
                        ),
                        **answer,
                    ),
                    timeout=TIMEOUT,
                )
            )
            if error is None:
                attacker.counts["second-factor guesses that worked"] += 1
                attacker.reached.add(member.person.account_id)

    async def _exploit_with_mailbox(
        self, member: Member, challenge_id: str, where: common_pb2.ClientContext
    ) -> bool:
        """The victim's inbox is open to the attacker: the email code works. False when
        it got them no session (nothing was sent, or the code was refused)."""
        attacker = self.attacker
        person = member.person
        before = len(self.mailbox.to(person.email))
        try:
            await self.identity.SendSignInCode(
                idp.SendSignInCodeRequest(challenge_id=challenge_id), timeout=TIMEOUT
            )
            mail = await self._next_mail(
                person.email, before, subject_is("サインインコード", "sign-in")
            )
            reply = await self.identity.VerifySecondFactor(
                idp.VerifySecondFactorRequest(
                    challenge_id=challenge_id,
                    client=where,
                    email_code=code_in(mail),
                    device_proof=attacker.proof(
                        where.device_id, "VerifySecondFactor", challenge_id
                    ),
                ),
                timeout=TIMEOUT,
            )
        except (grpc.aio.AioRpcError, TimeoutError) as error:
            attacker.counts[f"sign-in with the code from the victim's inbox: {_why(error)}"] += 1
            return False
        session: idp.SessionTokens = reply.session
        attacker.sessions.append(session)
        attacker.reached.add(person.account_id)
        attacker.counts["group sessions through the victim's inbox"] += 1
        await self._try_the_wallet(member, session, where, "email-code session")
        # A step-up with what the attacker knows (the password), then the wallet again.
        try:
            session = await self._step_up_with_password(session, where)
        except grpc.aio.AioRpcError as error:
            attacker.counts[f"step-up with the password: {describe(error)}"] += 1
        else:
            attacker.counts[f"step-up with the password: level {session.assurance_level}"] += 1
            await self._try_the_wallet(member, session, where, "after a password step-up")
        # Their own address on the account, as primary and as a second address.
        for make_primary in (True, False):
            await self._add_own_address(member, session, make_primary)
        # Their own LINE ID linked, then used to sign in.
        subject = f"atk-line-{secrets.token_hex(4)}"
        linked = await refusal(self._link_external(session, subject))
        attacker.counts[f"external ID linked: {describe(linked)}"] += 1
        if linked is None:
            elsewhere = client(where.device_id, attacker.fresh_ip())
            external = await refusal(self._attacker_external_login(member, subject, elsewhere))
            attacker.counts[f"external-ID sign-in: {describe(external)}"] += 1
        # Their own authenticator app, then a fresh level-2 sign-in with it.
        strong = await self._enrol_own_totp(member, session, where)
        if strong is not None:
            await self._add_own_address(member, strong, make_primary=True)
        return True

    async def _step_up_with_password(
        self, session: idp.SessionTokens, where: common_pb2.ClientContext
    ) -> idp.SessionTokens:
        metadata = bearer_metadata(session.access_token)
        begun = await self.identity.BeginStepUp(
            idp.BeginStepUpRequest(client=where), metadata=metadata, timeout=TIMEOUT
        )
        reply = await self.identity.StepUp(
            idp.StepUpRequest(challenge_id=begun.challenge_id, password=PASSWORD),
            metadata=metadata,
            timeout=TIMEOUT,
        )
        raised: idp.SessionTokens = reply.session
        self.attacker.sessions.append(raised)
        return raised

    async def _attacker_external_login(
        self, member: Member, subject: str, where: common_pb2.ClientContext
    ) -> None:
        reply = await self._external_login(subject, where)
        self.attacker.sessions.append(reply.session)
        self.attacker.reached.add(member.person.account_id)
        await self._try_the_wallet(member, reply.session, where, "external-ID session")

    async def _try_the_wallet(
        self,
        member: Member,
        session: idp.SessionTokens,
        where: common_pb2.ClientContext,
        how: str,
        *,
        passkey: tuple[str, str] | None = None,
    ) -> None:
        """Exchange the session for a wallet token; with one, take the money."""
        attacker = self.attacker
        metadata = bearer_metadata(session.access_token)
        # The group token straight at the wallet first.
        for name, call in (
            ("cards listed with the group token", self.wallet.ListFundingSources(
                wallet_pb2.ListFundingSourcesRequest(), metadata=metadata, timeout=TIMEOUT)),
            ("payment code with the group token", self.wallet.IssuePaymentCode(
                wallet_pb2.IssuePaymentCodeRequest(client=where), metadata=metadata,
                timeout=TIMEOUT)),
        ):  # fmt: skip
            attacker.counts[f"{name}: {describe(await refusal(call))}"] += 1
        try:
            reply = await self.identity.ExchangeToken(
                idp.ExchangeTokenRequest(
                    audience="wallet",
                    client=where,
                    device_proof=attacker.proof(
                        where.device_id, "ExchangeToken", session.access_token
                    ),
                ),
                metadata=metadata,
                timeout=TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            attacker.counts[f"wallet token exchange ({how}): {describe(error)}"] += 1
            return
        attacker.counts[f"wallet token exchange ({how}): ISSUED"] += 1
        attacker.wallet_tokens.append(reply.access_token)
        await self._spend(member, reply.access_token, where)

    async def _spend(self, member: Member, token: str, where: common_pb2.ClientContext) -> None:
        """What the 2019 attackers did with a wallet: top up from the card, buy cigarettes."""
        attacker = self.attacker
        metadata = bearer_metadata(token)
        try:
            sources = await self.wallet.ListFundingSources(
                wallet_pb2.ListFundingSourcesRequest(), metadata=metadata, timeout=TIMEOUT
            )
            for source in sources.funding_sources:
                topped = await self.wallet.TopUpFromCard(
                    wallet_pb2.TopUpFromCardRequest(
                        funding_source_id=source.funding_source_id,
                        amount=jpy(9_000),
                        idempotency_key=str(uuid.uuid4()),
                        client=where,
                    ),
                    metadata=metadata,
                    timeout=TIMEOUT,
                )
                attacker.yen_moved += topped.top_up.amount.amount_minor
                member.balance += topped.top_up.amount.amount_minor
        except grpc.aio.AioRpcError as error:
            attacker.counts[f"top-up from the victim's card: {describe(error)}"] += 1
        try:
            code = await self.wallet.IssuePaymentCode(
                wallet_pb2.IssuePaymentCodeRequest(client=where), metadata=metadata, timeout=TIMEOUT
            )
            payment = await self.registers[0].capture(
                code.code, 4_900, [risk_pb2.GOODS_CATEGORY_TOBACCO]
            )
            attacker.yen_moved += payment.amount.amount_minor
            member.balance -= payment.amount.amount_minor
        except grpc.aio.AioRpcError as error:
            attacker.counts[f"tobacco bought with a payment code: {describe(error)}"] += 1

    async def _add_own_address(
        self, member: Member, session: idp.SessionTokens, make_primary: bool
    ) -> None:
        attacker = self.attacker
        address = attacker.address("primary" if make_primary else "second")
        metadata = bearer_metadata(session.access_token)
        label = "as a second address"
        if make_primary:
            label = f"as primary (level {session.assurance_level} session)"
        try:
            added = await self.identity.AddContact(
                idp.AddContactRequest(
                    kind=idp.CONTACT_KIND_EMAIL, address=address, make_primary=make_primary
                ),
                metadata=metadata,
                timeout=TIMEOUT,
            )
            mail = await self._next_mail(address, 0, lambda _: True)
            await self.identity.VerifyContact(
                idp.VerifyContactRequest(contact_id=added.contact.contact_id, code=code_in(mail)),
                metadata=metadata,
                timeout=TIMEOUT,
            )
        except (grpc.aio.AioRpcError, TimeoutError) as error:
            attacker.counts[f"own address added {label}: {_why(error)}"] += 1
            return
        attacker.counts[f"own address added {label}: verified"] += 1
        self.facts.setdefault("attacker_contacts", []).append((member.person.email, address))

    async def _enrol_own_totp(
        self, member: Member, session: idp.SessionTokens, where: common_pb2.ClientContext
    ) -> idp.SessionTokens | None:
        """Enrol the attacker's own authenticator app, sign in again with it, try the wallet."""
        attacker = self.attacker
        metadata = bearer_metadata(session.access_token)
        try:
            begun = await self.identity.BeginTotpEnrollment(
                idp.BeginTotpEnrollmentRequest(), metadata=metadata, timeout=TIMEOUT
            )
            await self.identity.ConfirmTotpEnrollment(
                idp.ConfirmTotpEnrollmentRequest(
                    enrollment_id=begun.enrollment_id, code=await next_totp(begun.secret)
                ),
                metadata=metadata,
                timeout=TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            attacker.counts[f"own authenticator app enrolled: {describe(error)}"] += 1
            return None
        attacker.counts["own authenticator app enrolled: yes"] += 1
        # A fresh sign-in from the attacker's now-registered device, with their app.
        where = client(where.device_id, attacker.fresh_ip())
        try:
            reply = await self.identity.Login(
                idp.LoginRequest(
                    identifier=member.person.email,
                    password=PASSWORD,
                    client=where,
                    device_proof=attacker.proof(where.device_id, "Login", member.person.email),
                ),
                timeout=TIMEOUT,
            )
            if reply.HasField("challenge"):
                answered = await self.identity.VerifySecondFactor(
                    idp.VerifySecondFactorRequest(
                        challenge_id=reply.challenge.challenge_id,
                        client=where,
                        totp_code=await next_totp(begun.secret),
                        device_proof=attacker.proof(
                            where.device_id, "VerifySecondFactor", reply.challenge.challenge_id
                        ),
                    ),
                    timeout=TIMEOUT,
                )
                strong: idp.SessionTokens = answered.session
            else:
                stepped = await self.identity.BeginStepUp(
                    idp.BeginStepUpRequest(client=where),
                    metadata=bearer_metadata(reply.session.access_token),
                    timeout=TIMEOUT,
                )
                raised = await self.identity.StepUp(
                    idp.StepUpRequest(
                        challenge_id=stepped.challenge_id, totp_code=await next_totp(begun.secret)
                    ),
                    metadata=bearer_metadata(reply.session.access_token),
                    timeout=TIMEOUT,
                )
                strong = raised.session
        except grpc.aio.AioRpcError as error:
            attacker.counts[f"sign-in with own authenticator app: {describe(error)}"] += 1
            return None
        attacker.sessions.append(strong)
        attacker.counts[f"sign-in with own authenticator app: level {strong.assurance_level}"] += 1
        await self._try_the_wallet(member, strong, where, "own authenticator app, level 2")
        return strong

    async def _reset_with_own_address(
        self, member: Member, where: common_pb2.ClientContext
    ) -> None:
        """RequestPasswordReset with an address of the attacker's in every way the contract
        allows: inside the identifier, in fields the contract does not have, in metadata."""
        attacker = self.attacker
        victim = member.person.email
        own = attacker.address("reset")
        local, _, domain = victim.partition("@")
        identifiers = [
            victim,
            f"{victim},{own}",
            f"{victim};{own}",
            f"{victim} {own}",
            f"{victim}\r\nBcc: {own}",
            f"Attacker <{own}>, {victim}",
            victim.upper(),
            "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in local)
            + "@"
            + domain,
        ]
        for identifier in identifiers:
            attacker.counts["password resets asked"] += 1
            await refusal(
                self.identity.RequestPasswordReset(
                    idp.RequestPasswordResetRequest(identifier=identifier, client=where),
                    timeout=TIMEOUT,
                )
            )
        # Fields the contract does not define, as a hidden form field would be sent.
        raw = self.identity_channel.unary_unary(
            "/mamoru.identity.v1.IdentityService/RequestPasswordReset",
            request_serializer=lambda body: body,
            response_deserializer=idp.RequestPasswordResetResponse.FromString,
        )
        body = idp.RequestPasswordResetRequest(identifier=victim, client=where).SerializeToString()
        for number in (3, 15, 99):
            attacker.counts["password resets asked"] += 1
            await refusal(raw(body + _string_field(number, own), timeout=TIMEOUT))
        for header in ("x-reset-email", "reply-to", "email", "x-forwarded-to"):
            attacker.counts["password resets asked"] += 1
            await refusal(
                self.identity.RequestPasswordReset(
                    idp.RequestPasswordResetRequest(identifier=victim, client=where),
                    metadata=((header, own),),
                    timeout=TIMEOUT,
                )
            )

    async def _without_a_session(self, member: Member, where: common_pb2.ClientContext) -> None:
        """The wallet without any real session: their own external ID, forged tokens,
        guessed payment codes at a register."""
        attacker = self.attacker
        subject = f"atk-line-{secrets.token_hex(4)}"
        error = await refusal(self._external_login(subject, where))
        attacker.counts[f"external-ID sign-in with their own ID: {describe(error)}"] += 1
        forged_group = attacker.forged_token(member.person.account_id, "group")
        error = await refusal(
            self.identity.ExchangeToken(
                idp.ExchangeTokenRequest(audience="wallet", client=where),
                metadata=bearer_metadata(forged_group),
                timeout=TIMEOUT,
            )
        )
        attacker.counts[f"wallet token for a forged session: {describe(error)}"] += 1
        forged_wallet = attacker.forged_token(str(uuid.uuid4()), "wallet")
        error = await refusal(
            self.wallet.IssuePaymentCode(
                wallet_pb2.IssuePaymentCodeRequest(client=where),
                metadata=bearer_metadata(forged_wallet),
                timeout=TIMEOUT,
            )
        )
        attacker.counts[f"payment code with a forged wallet token: {describe(error)}"] += 1
        code = "".join(str(self.rng.randrange(10)) for _ in range(20))
        error = await refusal(
            self.registers[0].capture(code, 4_900, [risk_pb2.GOODS_CATEGORY_TOBACCO])
        )
        attacker.counts[f"tobacco with a guessed payment code: {describe(error)}"] += 1

    async def _next_mail(
        self, address: str, after: int, wanted: Callable[[ReceivedMessage], bool]
    ) -> ReceivedMessage:
        seen = after
        async with asyncio.timeout(TIMEOUT * 2):
            while True:
                arrived = await self.mailbox.wait_for(seen + 1, within=TIMEOUT * 2, to=address)
                for message in arrived[seen:]:
                    if wanted(message):
                        return message
                seen = len(arrived)

    # 3. Detection and response --------------------------------------------------------

    async def response(self) -> None:
        async with self.timeline.phase(
            "response", "3. Detection and response: the operator flips the switches"
        ) as phase:
            alerts = await self.risk.ListAlerts(
                risk_pb2.ListAlertsRequest(), metadata=OPERATOR_METADATA, timeout=TIMEOUT
            )
            raised = sorted({alert.rule_id for alert in alerts.alerts})
            phase.counts["alerts_raised"] = len(alerts.alerts)
            phase.notes.append(f"alerts: {', '.join(raised) or 'none'}")
            operator_mail = [
                m
                for m in self.mailbox.to(OPERATOR_INBOX)
                if subject_is(*OPERATOR_ALERT_SUBJECTS)(m)
            ]
            phase.counts["operator_alert_mails"] = len(operator_mail)
            for alert in alerts.alerts:
                await self.risk.UpdateAlert(
                    risk_pb2.UpdateAlertRequest(
                        alert_id=alert.alert_id,
                        status=risk_pb2.ALERT_STATUS_ACKNOWLEDGED,
                        note="on it: blocking the attacking countries and stopping card top-ups",
                    ),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
            self.checked(
                "stuffing_alert_raised_without_a_call",
                "alert.stuffing_wave" in raised and self.alert_seen_at is not None,
                f"alerts raised: {raised or 'none'}"
                + (
                    f", stuffing alert at +{self.alert_seen_at:.1f} s" if self.alert_seen_at else ""
                ),
                "no stuffing alert: the credential-stuffing wave went unnoticed by risk's alert "
                "rules",
            )
            self.checked(
                "operators_told_by_mail",
                bool(operator_mail),
                f"{len(operator_mail)} alert mails to {OPERATOR_INBOX}",
                "the stuffing alert never reached the operators' inbox",
            )
            await self._flip_switches()
            # The attacker comes back after the switches.
            await self._second_wave(phase)
        for flip in self.report.switch_flips:
            self.checked(
                f"switch_effective:{flip.switch}",
                flip.effective_after_seconds is not None,
                f"effective after {flip.effective_after_seconds:.2f} s ({flip.probe})"
                if flip.effective_after_seconds is not None
                else f"not effective within {self.size.switch_deadline_seconds:.0f} s "
                f"({flip.probe})",
                f"kill switch {flip.switch} not applied within seconds",
            )

    async def _set_policy(self, reason: str, **change: Any) -> None:
        await self.risk.SetPolicy(
            risk_pb2.SetPolicyRequest(reason=reason, **change),
            metadata=OPERATOR_METADATA,
            timeout=TIMEOUT,
        )
        self.operator_actions.append((f"policy {next(iter(change))}", reason))

    async def _flip(
        self,
        switch: str,
        reason: str,
        probe: Callable[[], Awaitable[bool]],
        what: str,
        **change: Any,
    ) -> None:
        await self._set_policy(reason, **change)
        latency = await until(probe, self.size.switch_deadline_seconds)
        self.report.switch_flips.append(
            SwitchFlip(switch, reason, None if latency is None else round(latency, 3), what)
        )

    async def _flip_switches(self) -> None:
        attacker = self.attacker
        victims = {found.pair.email for found in attacker.discovered}
        canary = next(
            m
            for m in self.members
            if m.kind == "totp" and m.payer is not None and m.person.email not in victims
        )
        # Blocking a country: a right password from there must not reach a second factor.
        blocked_ip = f"{FOREIGN_PREFIXES['CN']}.251.{self.rng.randrange(2, 250)}"

        async def sign_in_from_china_refused() -> bool:
            error = await refusal(
                self.identity.Login(
                    idp.LoginRequest(
                        identifier=canary.person.email,
                        password=canary.person.password,
                        client=client(f"probe-{secrets.token_hex(4)}", blocked_ip),
                    ),
                    timeout=TIMEOUT,
                )
            )
            return error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED

        for country in FOREIGN_PREFIXES:
            reason = f"credential stuffing from {country} (alert.stuffing_wave)"
            if country == "CN":
                await self._flip(
                    f"country:{country}", reason, sign_in_from_china_refused,
                    "right password from a CN address refused before a second factor",
                    country=risk_pb2.CountryChange(country_code=country, blocked=True),
                )  # fmt: skip
            else:
                await self._set_policy(
                    reason, country=risk_pb2.CountryChange(country_code=country, blocked=True)
                )
        # Card top-ups: probe over the per-top-up cap, so no money moves while waiting.
        assert canary.payer is not None
        payer = await self.people.payer(canary.person, self.wallet)
        canary.wallet_tokens.append(payer.token)

        async def card_top_up_suspended() -> bool:
            error = await refusal(payer.top_up_from_card(canary.card_id, 10_000_000))
            return error is not None and reason_of(error) == "CHANNEL_SUSPENDED"

        await self._flip(
            "top_up_channel:card", "card top-ups from stolen sessions", card_top_up_suspended,
            "card top-up refused with CHANNEL_SUSPENDED",
            top_up_channel=risk_pb2.TopUpChannelChange(
                channel=risk_pb2.TOP_UP_CHANNEL_CARD, suspended=True),
        )  # fmt: skip

        async def sign_up_suspended() -> bool:
            email = f"probe-{secrets.token_hex(4)}@example.jp"
            error = await refusal(
                self.identity.Register(
                    idp.RegisterRequest(
                        email=email, password=PASSWORD, client=client("probe", home_address())
                    ),
                    timeout=TIMEOUT,
                )
            )
            return error is not None and reason_of(error) in (
                "REGISTRATION_SUSPENDED",
                "REGISTRATION_REFUSED",
            )

        await self._flip(
            "registration_suspended", "no sign-ups while the wave lasts", sign_up_suspended,
            "Register refused", registration_suspended=True,
        )  # fmt: skip

        async def external_login_suspended() -> bool:
            error = await refusal(
                self.identity.BeginExternalLogin(
                    idp.BeginExternalLoginRequest(provider=PROVIDER, client=client()),
                    timeout=TIMEOUT,
                )
            )
            return error is not None and reason_of(error) == "PROVIDER_SUSPENDED"

        await self._flip(
            f"external_login:{PROVIDER}", "external IDs linked by attackers",
            external_login_suspended, "BeginExternalLogin refused with PROVIDER_SUSPENDED",
            external_login=risk_pb2.ExternalLoginChange(provider=PROVIDER, suspended=True),
        )  # fmt: skip

    async def _second_wave(self, phase: Phase) -> None:
        """After the switches: the right pairs again from the blocked countries, external IDs,
        and sign-ups from everywhere."""
        attacker = self.attacker
        outcomes: Counter[str] = Counter()
        for pair in (found.pair for found in attacker.discovered):
            for country in FOREIGN_PREFIXES:
                ip = f"{FOREIGN_PREFIXES[country]}.252.{self.rng.randrange(2, 250)}"
                try:
                    reply = await self.identity.Login(
                        idp.LoginRequest(
                            identifier=pair.email,
                            password=pair.password,
                            client=client(attacker.device(), ip),
                        ),
                        timeout=TIMEOUT,
                    )
                except grpc.aio.AioRpcError as refused:
                    outcomes[f"refused ({describe(refused)})"] += 1
                    continue
                outcomes[
                    "reached a second factor" if reply.HasField("challenge") else "session"
                ] += 1
        for ip in attacker.ips[:4]:
            mule = await refusal(
                self.identity.Register(
                    idp.RegisterRequest(
                        email=attacker.address("mule"),
                        password=PASSWORD,
                        client=client(attacker.device(), ip),
                    ),
                    timeout=TIMEOUT,
                )
            )
            outcomes[f"mule sign-up: {describe(mule)}"] += 1
        phase.counts["second_wave_attempts"] = sum(outcomes.values())
        for what, count in sorted(outcomes.items()):
            phase.notes.append(f"attacker, after the switches: {what}: {count}")
        through = outcomes["reached a second factor"] + outcomes["session"]
        self.checked(
            "blocked_countries_refused",
            through == 0,
            f"{through} right passwords from blocked countries reached a second factor or more",
            "the country block is not applied to sign-ins",
        )
        mules = sum(n for what, n in outcomes.items() if what.startswith("mule sign-up: accepted"))
        self.checked(
            "sign_ups_suspended",
            mules == 0,
            f"{mules} sign-ups accepted while suspended",
            "the sign-up kill switch is not applied",
        )

    # 4. Victims -------------------------------------------------------------------

    async def victims(self) -> None:
        attacker = self.attacker
        size = self.size
        async with self.timeline.phase(
            "victims", "4. Victims: reports, the victim query, compensation"
        ) as phase:
            await self._reset_while_a_thief_holds_a_code(phase)
            # Victims whose inbox was open stop the attacker's address change by its link.
            frozen = 0
            for email in sorted({email for email, _ in self.facts.get("attacker_contacts", [])}):
                for message in self.mailbox.to(email):
                    match = _FREEZE_LINK.search(message.text())
                    if match is None:
                        continue
                    error = await refusal(
                        self.identity.FreezeContactChange(
                            idp.FreezeContactChangeRequest(freeze_token=match.group(1)),
                            timeout=TIMEOUT,
                        )
                    )
                    frozen += error is None
            phase.counts["address_changes_stopped_by_their_freeze_link"] = frozen
            victims = [f.pair.member for f in attacker.discovered if f.pair.member is not None]
            candidates = sorted(
                (m for m in victims if m.has_wallet),
                key=lambda m: (m.kind != "passkey", m.person.account_id in attacker.reached),
            )
            reports: list[wallet_pb2.ReportUnauthorizedResponse] = []
            for member in candidates[: size.reporters]:
                member.person.session = None  # a fresh sign-in, as after reading the notices
                try:
                    payer = await self.people.payer(member.person, self.wallet)
                except grpc.aio.AioRpcError as error:
                    phase.notes.append(
                        f"{member.person.email} could not open the wallet: {_why(error)}"
                    )
                    continue
                member.wallet_tokens.append(payer.token)
                reports.append(
                    await payer.report_unauthorized(
                        description="mails about a sign-in I did not make"
                    )
                )
            phase.counts["reports_this_was_not_me"] = len(reports)
            if not reports:
                self.checked(
                    "victims_found_exactly", False, "nobody could report",
                    "victims could not report: the wallet refused its own holders",
                )  # fmt: skip
                return
            window_start = Timestamp(seconds=int(self.attack_started_wall))
            indicators = risk_pb2.Indicators(
                ip_addresses=[*attacker.ips, *attacker.noisy],
                device_ids=sorted(attacker.devices),
                window_start=window_start,
            )
            main_case = reports[0].case_id
            await self.risk.ConfirmFraud(
                risk_pb2.ConfirmFraudRequest(
                    case_id=main_case,
                    indicators=indicators,
                    reason="credential stuffing wave from the alerted IPs and devices",
                ),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            self.operator_actions.append(
                ("case confirmed", "credential stuffing wave from the alerted IPs and devices")
            )
            for report in reports[1:]:
                await self.risk.UpdateCase(
                    risk_pb2.UpdateCaseRequest(
                        case_id=report.case_id,
                        status=risk_pb2.CASE_STATUS_CLOSED,
                        note=f"same wave as case {main_case}",
                    ),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
            expected_total = attacker.yen_moved
            found: risk_pb2.FindAffectedAccountsResponse | None = None

            async def settled() -> bool:
                nonlocal found
                found = await self.risk.FindAffectedAccounts(
                    risk_pb2.FindAffectedAccountsRequest(case_id=main_case),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
                accounts = {a.account_id for a in found.accounts}
                return accounts >= attacker.reached and found.total.amount_minor >= expected_total

            # Outcomes reach risk through the services' outboxes; give them a moment.
            await until(settled, TIMEOUT, every=0.5)
            assert found is not None
            again = await self.risk.FindAffectedAccounts(
                risk_pb2.FindAffectedAccountsRequest(case_id=main_case),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            accounts = {a.account_id for a in found.accounts}
            phase.counts.update(
                accounts_the_attacker_reached=len(attacker.reached),
                victims_found=len(accounts),
                yen_lost_per_victim_query=found.total.amount_minor,
            )
            self.checked(
                "victims_found_exactly",
                accounts == attacker.reached
                and found.total.amount_minor == expected_total
                and again == found,
                f"query: {len(accounts)} accounts, {found.total.amount_minor} yen; attacker "
                f"reached {len(attacker.reached)} accounts and moved {expected_total} yen; "
                f"missed {len(attacker.reached - accounts)}, "
                f"extra {len(accounts - attacker.reached)}, same answer twice: {again == found}",
                "the victim query is not exact: victims and amounts are an estimate again",
            )
            request = wallet_pb2.CompensateCaseRequest(
                case_id=main_case, reason="credential stuffing wave, confirmed"
            )
            first = await self.wallet_operator.CompensateCase(
                request, metadata=OPERATOR_METADATA, timeout=TIMEOUT
            )
            second = await self.wallet_operator.CompensateCase(
                request, metadata=OPERATOR_METADATA, timeout=TIMEOUT
            )
            self.operator_actions.append(("compensation", request.reason))
            for line in first.lines:
                owner = next((m for m in self.members if m.wallet_id == line.wallet_id), None)
                if owner is not None:
                    # A stolen top-up goes back to the card (and leaves the wallet); a
                    # stolen payment is credited back to the wallet.
                    sign = 1 if line.method == "wallet_credit" else -1
                    owner.balance += sign * line.amount.amount_minor
            phase.counts.update(
                compensation_paid_yen=first.total.amount_minor,
                compensation_lines=len(first.lines),
                paid_again_on_rerun=second.newly_paid,
            )
            self.checked(
                "compensation_settles_and_reruns_change_nothing",
                first.total.amount_minor == expected_total
                and second.newly_paid == 0
                and list(second.lines) == list(first.lines),
                f"paid {first.total.amount_minor} yen for {expected_total} taken; "
                f"re-run paid {second.newly_paid} more lines",
                "CompensateCase is not exact or not idempotent: a re-run moved money again",
            )
            # The reporters' wallets were frozen by their report; the case is settled.
            for report in reports:
                await self.wallet_operator.UnfreezeWallet(
                    wallet_pb2.UnfreezeWalletRequest(
                        wallet_id=report.wallet.wallet_id, reason=f"case {main_case} settled"
                    ),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
                self.operator_actions.append(("wallet unfrozen", f"case {main_case} settled"))

    async def _reset_while_a_thief_holds_a_code(self, phase: Phase) -> None:
        """A phone is taken with the wallet open: the thief has a fresh payment code on
        its screen and walks to a register, while the owner resets the password from
        a laptop with the link from the inbox. The reset must reach the code: once the
        wallet refuses the phone's token, the register is refused too."""
        name = "payment_code_dies_with_the_owners_reset"
        control = (
            "a payment code outlived the owner's password reset: money moved after the "
            "owner took the account back"
        )
        victims = {f.pair.email for f in self.attacker.discovered}
        owner = next(
            (
                m
                for m in self.members
                if m.kind == "passkey"
                and m.balance >= TOBACCO_CARTON
                and m.person.email not in victims
            ),
            None,
        )
        if owner is None:
            self.checked(name, False, "no passkey holder with money to steal", control)
            return
        person = owner.person
        person.session = None
        phone = await self.people.payer(person, self.wallet)
        owner.wallet_tokens.append(phone.token)
        code = await phone.payment_code()

        laptop = client("owners-laptop", person.ip)
        before = len(self.mailbox.to(person.email))
        await self.identity.RequestPasswordReset(
            idp.RequestPasswordResetRequest(identifier=person.email, client=laptop),
            timeout=TIMEOUT,
        )
        link = await self._next_mail(person.email, before, has_reset_link)
        await self.identity.CompletePasswordReset(
            idp.CompletePasswordResetRequest(
                reset_token=reset_token_in(link.text()),
                new_password=OWNERS_OWN_RESET_PASSWORD,
                client=laptop,
            ),
            timeout=TIMEOUT,
        )
        person.password = OWNERS_OWN_RESET_PASSWORD

        async def phone_refused() -> bool:
            error = await refusal(phone.balance())
            return error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED

        learned = await until(phone_refused, REVOCATION_DEADLINE_SECONDS, every=0.05)
        at_register = await refusal(
            self.registers[-1].capture(code, TOBACCO_CARTON, [risk_pb2.GOODS_CATEGORY_TOBACCO])
        )
        if at_register is None:
            # Money left the wallet, though not through the stuffing wave's IPs and
            # devices: it stays out of the victim query's count.
            owner.balance -= TOBACCO_CARTON
        # The owner opens the wallet again (the passkey passes the cool-off): all there.
        person.session = None
        again = await self.people.payer(person, self.wallet)
        owner.wallet_tokens.append(again.token)
        if person.session is not None:
            owner.sessions.append(person.session)
        balance = (await again.balance()).wallet.balance.amount_minor
        phase.counts["payment_codes_captured_after_the_owners_reset"] = int(at_register is None)
        phase.notes.append(
            "owner's reset reached the wallet after "
            + (f"{learned:.2f} s" if learned is not None else "more than 5 s")
            + f"; the thief's capture: {describe(at_register)}"
        )
        self.checked(
            name,
            learned is not None
            and at_register is not None
            and reason_of(at_register) == "CODE_INVALID"
            and balance == owner.balance,
            "wallet refused the phone's token after "
            + (f"{learned:.2f} s" if learned is not None else "never (5 s)")
            + f"; capture at the register: {describe(at_register)}; balance {balance} yen, "
            f"{owner.balance} expected",
            control,
        )

    # 5. Forced reset --------------------------------------------------------------

    async def forced_reset(self) -> None:
        attacker = self.attacker
        async with self.timeline.phase(
            "forced_reset", "5. Forced reset of every password"
        ) as phase:
            reason = "credential stuffing wave: every password is reset"
            total = processed = 0
            async for progress in self.identity_operator.ForceCredentialReset(
                idp.ForceCredentialResetRequest(all_accounts=True, reason=reason),
                metadata=OPERATOR_METADATA,
                timeout=120,
            ):
                total, processed = progress.total, progress.processed
            self.operator_actions.append(("forced reset", reason))
            addresses = {m.person.email for m in self.members}

            def forced(message: ReceivedMessage) -> bool:
                return subject_is(*FORCED_RESET_SUBJECTS)(message)

            async def all_told() -> bool:
                told = Counter(
                    r.lower() for m in self.mailbox.messages if forced(m) for r in m.recipients
                )
                return all(told[a.lower()] >= 1 for a in addresses)

            await until(all_told, 60, every=0.5)
            await asyncio.sleep(1.5)  # any duplicate would be on its way by now
            told = Counter(
                r.lower() for m in self.mailbox.messages if forced(m) for r in m.recipients
            )
            wrong_count = sorted(a for a in addresses if told[a.lower()] != 1)
            elsewhere = sorted(r for r in told if r not in {a.lower() for a in addresses})
            phase.counts.update(
                accounts_reset=processed,
                accounts_in_job=total,
                forced_reset_notices=sum(told.values()),
            )
            self.checked(
                "forced_reset_one_notice_each_at_the_registered_address",
                not wrong_count and not elsewhere and processed >= len(self.members),
                f"{processed} reset; {len(wrong_count)} holders without exactly one notice "
                f"{wrong_count[:3]}; notices elsewhere: {elsewhere[:3]}",
                "the forced reset did not reach every holder once, at the registered address",
            )
            # Every session from before the reset is dead, the attacker's included.
            old_sessions = [s for m in self.members for s in m.sessions] + attacker.sessions
            old_wallet_tokens = [t for m in self.members for t in m.wallet_tokens]
            old_wallet_tokens += attacker.wallet_tokens
            alive: list[str] = []

            async def dead(session: idp.SessionTokens) -> None:
                listing = await refusal(
                    self.identity.ListSessions(
                        idp.ListSessionsRequest(),
                        metadata=bearer_metadata(session.access_token),
                        timeout=TIMEOUT,
                    )
                )
                refresh = await refusal(
                    self.identity.RefreshSession(
                        idp.RefreshSessionRequest(refresh_token=session.refresh_token),
                        timeout=TIMEOUT,
                    )
                )
                if listing is None or refresh is None:
                    alive.append(f"session {session.session_id}")

            async def dead_token(token: str) -> None:
                async def refused() -> bool:
                    error = await refusal(
                        self.wallet.GetBalance(
                            wallet_pb2.GetBalanceRequest(),
                            metadata=bearer_metadata(token),
                            timeout=TIMEOUT,
                        )
                    )
                    return error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED

                # The wallet learns of revocations from identity's stream.
                if await until(refused, 10, every=0.2) is None:
                    alive.append("wallet token")

            await each(old_sessions, dead, 8)
            await each(old_wallet_tokens, dead_token, 8)
            phase.counts.update(
                old_sessions_checked=len(old_sessions),
                old_wallet_tokens_checked=len(old_wallet_tokens),
                still_alive=len(alive),
            )
            self.checked(
                "every_old_session_is_dead",
                not alive,
                f"{len(alive)} of {len(old_sessions) + len(old_wallet_tokens)} still accepted: "
                f"{alive[:3]}",
                "sessions survived the forced reset: a stolen session outlives the password",
            )
            # The old password no longer signs anyone in.
            sample = self.members[0].person
            error = await refusal(self.people.login(sample))
            phase.notes.append(f"old password after the reset: {describe(error)}")

    # 6. Wind-down -----------------------------------------------------------------

    async def wind_down(self) -> None:
        async with self.timeline.phase(
            "wind_down", "6. Wind-down: balances paid out or listed"
        ) as phase:
            reason = "service end: balances are paid out"
            await self._set_policy(reason, wind_down=True)
            before: wallet_pb2.ListUnclaimedBalancesResponse | None = None

            async def notified() -> bool:
                nonlocal before
                error = await refusal(
                    self.wallet_operator.NotifyBalanceHolders(
                        wallet_pb2.NotifyBalanceHoldersRequest(
                            claim_deadline=now_timestamp(90 * 86_400)
                        ),
                        metadata=OPERATOR_METADATA,
                        timeout=TIMEOUT,
                    )
                )
                return error is None

            wind_down_applied = await until(notified, 10, every=0.2)
            self.operator_actions.append(("balance holders notified", reason))
            before = await self.wallet_operator.ListUnclaimedBalances(
                wallet_pb2.ListUnclaimedBalancesRequest(),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            expected = sum(m.balance for m in self.members if m.balance > 0)
            holders = [m for m in self.members if m.balance > 0]

            def told(member: Member) -> bool:
                return any(
                    subject_is(*WIND_DOWN_SUBJECTS)(m) for m in self.mailbox.to(member.person.email)
                )

            async def every_holder_told() -> bool:
                return all(told(member) for member in holders)

            await until(every_holder_told, 30, every=0.5)
            untold = [m.person.email for m in holders if not told(m)]
            self.checked(
                "every_holder_told_of_wind_down",
                not untold,
                f"{len(holders) - len(untold)} of {len(holders)} holders got the wind-down notice "
                f"at their registered address; not told: {untold[:3]}",
                "balance holders were not told how to claim their money at wind-down",
            )
            # Passkey holders can still open their wallet after the forced reset: they
            # choose a new password from the notice, sign in with the passkey, claim.
            claimed = 0
            claims: list[str] = []
            for member in holders:
                if member.kind != "passkey":
                    continue
                try:
                    await self._complete_forced_reset(member)
                    person = member.person
                    await self.people.sign_in_with_passkey(person)
                    payer = await self.people.payer(person, self.wallet)
                    await self.wallet.RegisterPayoutAccount(
                        wallet_pb2.RegisterPayoutAccountRequest(
                            bank_code="0001", branch_code="100", account_number="1234567",
                            holder_name="ヤマダ タロウ",
                        ),
                        metadata=payer.metadata,
                        timeout=TIMEOUT,
                    )  # fmt: skip
                    payout = await self.wallet.ClaimPayout(
                        wallet_pb2.ClaimPayoutRequest(idempotency_key=str(uuid.uuid4())),
                        metadata=payer.metadata,
                        timeout=TIMEOUT,
                    )
                except (grpc.aio.AioRpcError, TimeoutError, AssertionError) as error:
                    claims.append(f"{member.person.email}: {_why(error)}")
                    continue
                claimed += payout.amount.amount_minor
                member.balance -= payout.amount.amount_minor
            after = await self.wallet_operator.ListUnclaimedBalances(
                wallet_pb2.ListUnclaimedBalancesRequest(),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            reconciled = await self.wallet_operator.Reconcile(
                wallet_pb2.ReconcileRequest(), metadata=OPERATOR_METADATA, timeout=TIMEOUT
            )
            phase.counts.update(
                balance_holders=len(holders),
                yen_held=before.total.amount_minor,
                payouts=sum(1 for m in holders if m.kind == "passkey") - len(claims),
                yen_paid_out=claimed,
                unclaimed_wallets=after.wallet_count,
                yen_unclaimed=after.total.amount_minor,
                ledger_accounts_checked=reconciled.accounts_checked,
            )
            if claims:
                phase.notes.append(f"claims refused: {claims[:3]}")
            phase.notes.append(
                "holders in the cool-off after their reset (no passkey) are listed as unclaimed"
            )
            self.checked(
                "every_balance_paid_out_or_listed",
                wind_down_applied is not None
                and before.total.amount_minor == expected
                and claimed + after.total.amount_minor == before.total.amount_minor
                and after.total.amount_minor == sum(m.balance for m in holders),
                f"held {before.total.amount_minor} yen (the drill counted {expected}); paid out "
                f"{claimed}, unclaimed {after.total.amount_minor} in {after.wallet_count} wallets",
                "wind-down lost track of money: balances are neither paid out nor listed",
            )
            self.checked(
                "ledger_balances",
                reconciled.balanced
                and reconciled.ledger_sum_minor == 0
                and not reconciled.differences
                and not reconciled.unbalanced_entries,
                f"balanced={reconciled.balanced}, sum={reconciled.ledger_sum_minor}, "
                f"{len(reconciled.differences)} differences, "
                f"{len(reconciled.unbalanced_entries)} unbalanced entries",
                "the ledger does not balance: double entry broke",
            )

    async def _complete_forced_reset(self, member: Member) -> None:
        person = member.person
        notices = [
            m for m in self.mailbox.to(person.email) if subject_is(*FORCED_RESET_SUBJECTS)(m)
        ]
        assert notices, f"no forced-reset notice reached {person.email}"
        mail = notices[-1]
        await self.identity.CompletePasswordReset(
            idp.CompletePasswordResetRequest(
                reset_token=reset_token_in(mail.text()),
                new_password=NEW_PASSWORD,
                client=client(person.device, person.ip),
            ),
            timeout=TIMEOUT,
        )
        person.password = NEW_PASSWORD

    # Audit and mail -------------------------------------------------------------------

    async def audit(self) -> None:
        async with self.timeline.phase(
            "audit", "Audit: who did what, and where mail went"
        ) as phase:
            changes: list[risk_pb2.PolicyChange] = []
            token = ""
            while True:
                reply = await self.risk.ListPolicyChanges(
                    risk_pb2.ListPolicyChangesRequest(
                        page=common_pb2.PageRequest(page_size=500, page_token=token)
                    ),
                    metadata=OPERATOR_METADATA,
                    timeout=TIMEOUT,
                )
                changes.extend(reply.changes)
                token = reply.next_page_token
                if not token:
                    break
            recorded = Counter((c.actor, c.reason) for c in changes)
            wanted = Counter(
                (OPERATOR_ACTOR, reason)
                for what, reason in self.operator_actions
                if what.startswith(("policy ", "rule "))
            )
            missing = sorted(
                reason for (actor, reason), n in wanted.items() if recorded[actor, reason] < n
            )
            case_notes_ok = await self._case_notes_name_the_operator()
            security_log_ok = await self._forced_reset_in_security_log()
            phase.counts.update(
                operator_actions=len(self.operator_actions),
                policy_and_rule_changes_recorded=len(changes),
            )
            self.checked(
                "operator_actions_audited",
                not missing and case_notes_ok and security_log_ok,
                f"{sum(wanted.values())} switch and rule changes, {len(missing)} missing "
                f"{missing[:3]}; case notes name the operator: {case_notes_ok}; forced reset in "
                f"each account's security log with who and why: {security_log_ok}",
                "operator actions are missing from the audit log (who and why)",
            )
            self._mail_checks(phase)

    async def _case_notes_name_the_operator(self) -> bool:
        cases = await self.risk.ListCases(
            risk_pb2.ListCasesRequest(), metadata=OPERATOR_METADATA, timeout=TIMEOUT
        )
        confirmed = [
            c for c in cases.cases if c.status in (
                risk_pb2.CASE_STATUS_CONFIRMED_FRAUD, risk_pb2.CASE_STATUS_CLOSED)
        ]  # fmt: skip
        return bool(confirmed) and any(
            note.startswith(OPERATOR_ACTOR) for case in confirmed for note in case.notes
        )

    async def _forced_reset_in_security_log(self) -> bool:
        for member in self.members[:3]:
            log = await self.identity_operator.GetSecurityLog(
                idp.GetSecurityLogRequest(account_id=member.person.account_id),
                metadata=OPERATOR_METADATA,
                timeout=TIMEOUT,
            )
            if not any(
                event.kind == "password.forced_reset"
                and event.actor.startswith("operator")
                and "reason" in json.loads(event.details_json or "{}")
                for event in log.events
            ):
                return False
        return True

    def _mail_checks(self, phase: Phase) -> None:
        registered = {m.person.email.lower() for m in self.members}
        links = [m for m in self.mailbox.messages if has_reset_link(m)]
        stray = sorted({r for m in links for r in m.recipients if r.lower() not in registered})
        to_attacker = [m for m in self.mailbox.messages if _to_domain(m, ATTACKER_DOMAIN)]
        phase.counts.update(
            mails_delivered=len(self.mailbox.messages),
            reset_link_mails=len(links),
            mails_to_attacker_addresses=len(to_attacker),
        )
        kinds = Counter(m.subject for m in to_attacker)
        for subject, count in sorted(kinds.items()):
            phase.notes.append(f"to the attacker's addresses: {subject!r} x{count}")
        self.checked(
            "reset_links_only_to_registered_addresses",
            not stray,
            f"{len(links)} reset-link mails, to addresses outside the registered ones: "
            f"{stray[:3] or 'none'}",
            "a reset link reached an address other than the registered one: the reset path "
            "can be steered",
        )


def _to_domain(message: ReceivedMessage, domain: str) -> bool:
    return any(r.lower().endswith("@" + domain) for r in message.recipients)


def _string_field(number: int, value: str) -> bytes:
    """A length-delimited protobuf field the message does not define."""
    data = value.encode()
    return _varint((number << 3) | 2) + _varint(len(data)) + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _why(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return describe(error)
    return type(error).__name__ + (f": {error}" if str(error) else "")


async def run_drill(
    stack: LocalStack,
    provider: LocalOidcProvider,
    size: DrillSize,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> DrillReport:
    """Play the whole story against a running stack and report what each control did."""
    return await Drill(stack, provider, size, progress).run()
