"""Identity over real servers: risk and notify run beside it; mail lands in the local SMTP."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from dataclasses import dataclass
from typing import Any

import pyotp
import pytest_asyncio
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as pb

from services.runtime.access import bearer_metadata
from tests.harness import Cluster

TIMEOUT = 15.0
SECRETS_KEY = base64.b64encode(bytes(range(32))).decode()
IDENTITY_ENV = {
    "IDENTITY_SECRETS_KEY": SECRETS_KEY,
    "IDENTITY_WEBAUTHN_RP_ID": "localhost",
    "IDENTITY_WEBAUTHN_ORIGINS": "https://localhost",
}
PASSWORD = "correct horse battery staple mamoru"


def client(device: str = "phone-1", ip: str = "192.0.2.10") -> common_pb2.ClientContext:
    return common_pb2.ClientContext(ip_address=ip, device_id=device, user_agent="MamoruApp/1.0")


async def outbox_codes(cluster: Cluster, kind: str) -> list[str]:
    """Secrets identity handed to notify for ``kind`` (NOTICE_KIND_...), oldest first."""
    rows = await cluster.running["identity"].pool.fetch(
        "select payload from outbox where topic = 'notify.send_notice' order by id"
    )
    return [
        row["payload"]["code"]["secret"]
        for row in rows
        if row["payload"].get("kind") == kind and "code" in row["payload"]
    ]


async def latest_code(cluster: Cluster, kind: str) -> str:
    codes = await outbox_codes(cluster, kind)
    assert codes, f"no {kind} notice was queued"
    return codes[-1]


async def reset_mail(cluster: Cluster, address: str, count: int = 1) -> list[str]:
    """Texts of the reset mails delivered to ``address``, once ``count`` have arrived."""

    def resets() -> list[str]:
        texts = [m.text() for m in cluster.smtp.to(address)]
        return [text for text in texts if "reset-password?token=" in text]

    async with asyncio.timeout(TIMEOUT):
        while len(resets()) < count:  # noqa: ASYNC110 - the SMTP server offers no event per kind
            await asyncio.sleep(0.1)
    return resets()


def reset_token_in(text: str) -> str:
    match = re.search(r"reset-password\?token=([A-Za-z0-9_\-]+)", text)
    assert match, "no reset link in the message"
    return match.group(1)


@dataclass
class Person:
    email: str
    account_id: str
    device: str
    password: str = PASSWORD
    totp_secret: str = ""
    recovery_codes: tuple[str, ...] = ()


class IdentityDriver:
    """What the gateway does for a person, step by step, over gRPC."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.stub: Any = cluster.stub("identity", as_="gateway")
        self.operator: Any = cluster.stub("identity", as_="operator")

    async def register(self, email: str, device: str = "phone-1", **fields: Any) -> Person:
        await self.stub.Register(
            pb.RegisterRequest(email=email, password=PASSWORD, client=client(device), **fields),
            timeout=TIMEOUT,
        )
        code = await latest_code(self.cluster, "NOTICE_KIND_CONTACT_VERIFICATION")
        reply = await self.stub.VerifyEmail(
            pb.VerifyEmailRequest(email=email, code=code, client=client(device)),
            timeout=TIMEOUT,
        )
        return Person(email=email, account_id=reply.account_id, device=device)

    async def login(
        self, person: Person, device: str | None = None, ip: str = "192.0.2.10"
    ) -> pb.LoginResponse:
        reply: pb.LoginResponse = await self.stub.Login(
            pb.LoginRequest(
                identifier=person.email,
                password=person.password,
                client=client(device or person.device, ip),
            ),
            timeout=TIMEOUT,
        )
        return reply

    async def sign_in_with_email_code(
        self, person: Person, device: str | None = None
    ) -> pb.SessionTokens:
        """Password, then (when asked) the code sent to the registered email."""
        reply = await self.login(person, device)
        if reply.HasField("session"):
            return reply.session
        challenge_id = reply.challenge.challenge_id
        await self.stub.SendSignInCode(
            pb.SendSignInCodeRequest(challenge_id=challenge_id), timeout=TIMEOUT
        )
        code = await latest_code(self.cluster, "NOTICE_KIND_SIGN_IN_CODE")
        answer = await self.stub.VerifySecondFactor(
            pb.VerifySecondFactorRequest(
                challenge_id=challenge_id, email_code=code, client=client(device or person.device)
            ),
            timeout=TIMEOUT,
        )
        session: pb.SessionTokens = answer.session
        return session

    async def enrol_totp(self, person: Person, session: pb.SessionTokens) -> None:
        begun = await self.stub.BeginTotpEnrollment(
            pb.BeginTotpEnrollmentRequest(), metadata=self.bearer(session), timeout=TIMEOUT
        )
        confirmed = await self.stub.ConfirmTotpEnrollment(
            pb.ConfirmTotpEnrollmentRequest(
                enrollment_id=begun.enrollment_id, code=await next_totp(begun.secret)
            ),
            metadata=self.bearer(session),
            timeout=TIMEOUT,
        )
        person.totp_secret = begun.secret
        person.recovery_codes = tuple(confirmed.recovery_codes)

    async def sign_in_with_totp(
        self, person: Person, device: str | None = None
    ) -> pb.SessionTokens:
        reply = await self.login(person, device)
        assert reply.HasField("challenge"), "a second factor was expected"
        # The code accepted at enrolment is spent; wait for the next time step.
        code = await next_totp(person.totp_secret)
        answer = await self.stub.VerifySecondFactor(
            pb.VerifySecondFactorRequest(
                challenge_id=reply.challenge.challenge_id,
                totp_code=code,
                client=client(device or person.device),
            ),
            timeout=TIMEOUT,
        )
        session: pb.SessionTokens = answer.session
        return session

    @staticmethod
    def bearer(session: pb.SessionTokens | str) -> tuple[tuple[str, str], ...]:
        token = session if isinstance(session, str) else session.access_token
        return bearer_metadata(token)


_last_totp_step: dict[str, int] = {}


async def next_totp(secret: str) -> str:
    """A TOTP code of a later time step than the last one used with ``secret``.

    Identity accepts the previous, current and next step (clock drift), so three
    uses need no waiting: the previous step first, then the current, then the next.
    """
    totp = pyotp.TOTP(secret)
    async with asyncio.timeout(70):
        while True:
            current = int(time.time()) // 30
            step = max(current - 1, _last_totp_step.get(secret, current - 2) + 1)
            if step <= current + 1:
                _last_totp_step[secret] = step
                return totp.at(step * 30)
            await asyncio.sleep(0.5)


async def start_identity(cluster: Cluster, *extra: str, env: dict[str, str] | None = None) -> None:
    # Identity before notify: notify fetches identity's keys at its first person call.
    await cluster.start("risk", "identity", "notify", *extra, env={**IDENTITY_ENV, **(env or {})})


@pytest_asyncio.fixture
async def identity(cluster: Cluster) -> IdentityDriver:
    await start_identity(cluster)
    return IdentityDriver(cluster)
