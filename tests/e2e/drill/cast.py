"""Who plays the drill and how they are told apart: the operator, the attacker,
the people and the store registers, and the small gRPC helpers every phase uses.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mamoru.identity.v1 import identity_pb2 as idp
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2

from services.devstack.smtp import ReceivedMessage
from services.runtime.device_proof import DeviceKey
from tests.support.payer import Payer
from tests.support.people import TIMEOUT, Person, jpy

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
REVOCATION_DEADLINE_SECONDS = 60.0


TOBACCO_CARTON = 1_000


FORCED_RESET_SUBJECTS = ("パスワードの再設定が必要です", "please choose a new password")


WIND_DOWN_SUBJECTS = ("サービス終了", "the service is closing")


OPERATOR_ALERT_SUBJECTS = ("アラート", "alert")


OPERATOR_INBOX = "operators@mamoru.local"


ALERT_GRACE_SECONDS = 15.0


FREEZE_LINK = re.compile(r"freeze-contact\?token=([A-Za-z0-9_\-]+)")


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


def to_domain(message: ReceivedMessage, domain: str) -> bool:
    return any(r.lower().endswith("@" + domain) for r in message.recipients)


def string_field(number: int, value: str) -> bytes:
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


def why(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return describe(error)
    return type(error).__name__ + (f": {error}" if str(error) else "")
