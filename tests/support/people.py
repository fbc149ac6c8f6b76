"""People driving Mamoru the way the gateway does for them, over public contracts only.

The driver talks gRPC to identity (and the wallet) and reads what a person would
read in their inbox: verification codes, sign-in codes and reset links come
from the mail the local SMTP server received, never from a service's database.
It works the same against the in-process ``tests.harness.Cluster`` and the
multi-process ``services.devstack.stack.LocalStack``:

    identity = IdentityDriver(cluster.stub("identity", as_="gateway"), cluster.smtp)
    person = await identity.register("hanako@example.jp")   # on a phone that holds a key
    await identity.enrol_totp(person, await identity.sign_in(person))
    payer = await identity.payer(person, cluster.stub("wallet", as_="gateway"))
    await payer.enroll()

With a ``LocalStack``, ``stack_channel(stack, "identity")`` gives the channel for
the stub, and ``stack.smtp`` is the mailbox.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import jwt
import pyotp
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as pb
from mamoru.wallet.v1 import wallet_pb2

from services.devstack.smtp import LocalSmtpServer, ReceivedMessage
from services.devstack.stack import LocalStack
from services.identity.device_proof import DeviceKey
from services.runtime.access import bearer_metadata
from services.runtime.tls import load_tls, secure_channel
from tests.support.authenticator import SoftwareAuthenticator

TIMEOUT = 15.0
PASSWORD = "correct horse battery staple mamoru"
# Identity's passkey settings that match the software authenticator's origin.
IDENTITY_ENV = {
    "IDENTITY_WEBAUTHN_RP_ID": "localhost",
    "IDENTITY_WEBAUTHN_ORIGINS": "https://localhost",
}
WALLET_AUDIENCE = "wallet"

# Subjects of the code mails, in both languages notify writes.
VERIFICATION_SUBJECTS = ("確認コード", "verification code")
SIGN_IN_SUBJECTS = ("サインインコード", "sign-in code")
_CODE_ROW = re.compile(r"(?:コード|Code): (\d+)")
_RESET_LINK = re.compile(r"reset-password\?token=([A-Za-z0-9_\-]+)")


def client(device: str = "phone-1", ip: str = "192.0.2.10") -> common_pb2.ClientContext:
    return common_pb2.ClientContext(ip_address=ip, device_id=device, user_agent="MamoruApp/1.0")


_home_networks = itertools.count(1)


def home_address() -> str:
    """A documentation-range IPv6 address in a /48 of its own (65,536 of them), so
    people made by the driver do not share risk's per-IP and per-subnet counters
    (five registrations per IP per hour) unless a test says so."""
    network = next(_home_networks) % 0x10000
    return f"2001:db8:{network:x}::1"


def stack_channel(stack: LocalStack, name: str, *, as_: str = "gateway") -> grpc.aio.Channel:
    """An mTLS channel to a ``LocalStack`` service presenting ``as_``'s certificate."""
    address = stack.processes[name].address
    return secure_channel(address, load_tls(stack.tls_dir, as_), server_name=name)


# Mail ----------------------------------------------------------------------------


def subject_is(*markers: str) -> Callable[[ReceivedMessage], bool]:
    return lambda message: any(marker in message.subject for marker in markers)


def mentioning(text: str) -> Callable[[ReceivedMessage], bool]:
    return lambda message: text in message.text()


def has_reset_link(message: ReceivedMessage) -> bool:
    return _RESET_LINK.search(message.text()) is not None


def code_in(message: ReceivedMessage) -> str:
    match = _CODE_ROW.search(message.text())
    assert match, f"no code in the mail {message.subject!r}"
    return match.group(1)


def reset_token_in(text: str) -> str:
    match = _RESET_LINK.search(text)
    assert match, "no reset link in the message"
    return match.group(1)


async def next_mail(
    mailbox: LocalSmtpServer,
    address: str,
    wanted: Callable[[ReceivedMessage], bool],
    *,
    after: int,
    within: float = TIMEOUT,
) -> ReceivedMessage:
    """The first mail to ``address`` that ``wanted`` accepts among those after the
    first ``after`` (count them before the action that sends it)."""
    seen = after
    async with asyncio.timeout(within):
        while True:
            arrived = await mailbox.wait_for(seen + 1, within=within, to=address)
            for message in arrived[seen:]:
                if wanted(message):
                    return message
            seen = len(arrived)


async def reset_mail(
    mailbox: LocalSmtpServer, address: str, count: int = 1, within: float = TIMEOUT
) -> list[str]:
    """Texts of the reset mails delivered to ``address``, once ``count`` have arrived."""

    def resets() -> list[str]:
        return [m.text() for m in mailbox.to(address) if has_reset_link(m)]

    async with asyncio.timeout(within):
        while len(resets()) < count:
            await mailbox.wait_for(len(mailbox.to(address)) + 1, within=within, to=address)
    return resets()


# TOTP ----------------------------------------------------------------------------

_last_totp_step: dict[str, int] = {}


async def next_totp(secret: str) -> str:
    """A TOTP code of a later time step than the last one used with ``secret``.

    Identity accepts the previous, current and next step (clock drift), so two
    uses need no waiting: the current step, then the next. The previous step is
    never used: on a busy machine the call can reach identity after the step has
    moved on twice, and the code would be refused.
    """
    totp = pyotp.TOTP(secret)
    async with asyncio.timeout(70):
        while True:
            current = int(time.time()) // 30
            step = max(current, _last_totp_step.get(secret, current - 1) + 1)
            if step <= current + 1:
                _last_totp_step[secret] = step
                return totp.at(step * 30)
            await asyncio.sleep(0.5)


# People --------------------------------------------------------------------------


@dataclass
class Person:
    """What a person knows and holds: password, phone, authenticator app, passkey.

    Each of their devices (named by the label it sends, ``device`` being their
    phone) holds a key of its own, made on first use, and signs proofs with it.
    """

    email: str
    account_id: str
    device: str
    password: str = PASSWORD
    totp_secret: str = ""
    recovery_codes: tuple[str, ...] = ()
    authenticator: SoftwareAuthenticator | None = None
    session: pb.SessionTokens | None = None
    ip: str = "192.0.2.10"
    keys: dict[str, DeviceKey] = field(default_factory=dict)

    def key(self, device: str | None = None) -> DeviceKey:
        """The key held by the person's ``device`` (their phone when not given)."""
        label = device or self.device
        if label not in self.keys:
            self.keys[label] = DeviceKey()
        return self.keys[label]

    def proof(self, rpc: str, bound: str, device: str | None = None) -> str:
        """A fresh proof by ``device``'s key for one call of ``rpc`` about ``bound``."""
        return self.key(device).proof(rpc, bound)

    def session_proof(self, rpc: str, session: pb.SessionTokens) -> str:
        """A fresh proof for ``rpc`` bound to the session's access token, signed by the
        key the session is bound to (its ``cnf.jkt``), as the app on that device does;
        empty when the person holds no such key (a session of an unproven device)."""
        claims = jwt.decode(session.access_token, options={"verify_signature": False})
        bound_key = claims.get("cnf", {}).get("jkt")
        for key in self.keys.values():
            if key.thumbprint == bound_key:
                return key.proof(rpc, session.access_token)
        return ""


# Methods identity never lets open the wallet (the same inbox as a reset, a lost
# device, someone else's ID).
NEVER_FOR_MONEY = frozenset({"email_code", "recovery_code", "external"})


def session_methods(session: pb.SessionTokens) -> set[str]:
    """The ``amr`` of the session's access token (read, not verified: it is our own)."""
    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    return set(claims.get("amr", []))


def may_back_a_wallet_token(session: pb.SessionTokens) -> bool:
    return not (session_methods(session) & NEVER_FOR_MONEY)


def bearer(session: pb.SessionTokens | str) -> tuple[tuple[str, str], ...]:
    token = session if isinstance(session, str) else session.access_token
    return bearer_metadata(token)


class IdentityDriver:
    """What the gateway does for a person, step by step, over gRPC.

    ``stub`` is an identity stub presenting the ``gateway`` certificate; ``mailbox``
    is the SMTP server notify delivers to; ``operator`` an identity stub as
    ``operator`` for tests that need one.
    """

    def __init__(self, stub: Any, mailbox: LocalSmtpServer, *, operator: Any = None) -> None:
        self.stub = stub
        self.mailbox = mailbox
        self.operator = operator

    bearer = staticmethod(bearer)

    def _mail_count(self, address: str) -> int:
        return len(self.mailbox.to(address))

    async def register(
        self, email: str, device: str = "phone-1", *, ip: str | None = None, **fields: Any
    ) -> Person:
        """Register and verify the address with the code mailed to it. The person
        keeps ``ip`` (a fresh ``home_address()`` when not given) for later calls."""
        ip = ip or home_address()
        key = DeviceKey()
        before = self._mail_count(email)
        await self.stub.Register(
            pb.RegisterRequest(
                email=email,
                password=PASSWORD,
                client=client(device, ip),
                device_proof=key.proof("Register", email),
                **fields,
            ),
            timeout=TIMEOUT,
        )
        mail = await next_mail(
            self.mailbox, email, subject_is(*VERIFICATION_SUBJECTS), after=before
        )
        reply = await self.stub.VerifyEmail(
            pb.VerifyEmailRequest(
                email=email,
                code=code_in(mail),
                client=client(device, ip),
                device_proof=key.proof("VerifyEmail", email),
            ),
            timeout=TIMEOUT,
        )
        return Person(
            email=email, account_id=reply.account_id, device=device, ip=ip, keys={device: key}
        )

    async def login(
        self,
        person: Person,
        device: str | None = None,
        ip: str | None = None,
        *,
        device_proof: str | None = None,
    ) -> pb.LoginResponse:
        """The password step alone: a session or a second-factor challenge. The device
        proves its key unless ``device_proof`` says what to send instead."""
        if device_proof is None:
            device_proof = person.proof("Login", person.email, device)
        reply: pb.LoginResponse = await self.stub.Login(
            pb.LoginRequest(
                identifier=person.email,
                password=person.password,
                client=client(device or person.device, ip or person.ip),
                device_proof=device_proof,
            ),
            timeout=TIMEOUT,
        )
        return reply

    async def sign_in(
        self, person: Person, device: str | None = None, ip: str | None = None
    ) -> pb.SessionTokens:
        """Password, then the second factor the account has when identity asks:
        the passkey, else the authenticator app, else a code mailed to the address."""
        where = client(device or person.device, ip or person.ip)
        reply = await self.login(person, where.device_id, where.ip_address)
        if reply.HasField("session"):
            session = reply.session
        else:
            challenge = reply.challenge
            if (
                person.authenticator is not None
                and pb.CHALLENGE_METHOD_PASSKEY in challenge.methods
            ):
                session = await self._answer_with_passkey(person, challenge.challenge_id, where)
            elif person.totp_secret and pb.CHALLENGE_METHOD_TOTP in challenge.methods:
                session = await self.answer(
                    person,
                    challenge.challenge_id,
                    where,
                    totp_code=await next_totp(person.totp_secret),
                )
            else:
                session = await self._answer_with_email_code(person, challenge.challenge_id, where)
        person.session = session
        return session

    async def sign_in_with_email_code(
        self, person: Person, device: str | None = None
    ) -> pb.SessionTokens:
        """Password, then (when asked) the code sent to the registered email."""
        where = client(device or person.device, person.ip)
        reply = await self.login(person, where.device_id)
        if reply.HasField("session"):
            session = reply.session
        else:
            session = await self._answer_with_email_code(
                person, reply.challenge.challenge_id, where
            )
        person.session = session
        return session

    async def sign_in_with_totp(
        self, person: Person, device: str | None = None
    ) -> pb.SessionTokens:
        """Password, then the authenticator app's code (a challenge is expected)."""
        where = client(device or person.device, person.ip)
        reply = await self.login(person, where.device_id)
        assert reply.HasField("challenge"), "a second factor was expected"
        session = await self.answer(
            person,
            reply.challenge.challenge_id,
            where,
            totp_code=await next_totp(person.totp_secret),
        )
        person.session = session
        return session

    async def sign_in_with_passkey(
        self, person: Person, device: str | None = None
    ) -> pb.SessionTokens:
        """Usernameless passkey sign-in with the person's authenticator."""
        assert person.authenticator is not None, "enrol a passkey first"
        where = client(device or person.device, person.ip)
        begun = await self.stub.BeginPasskeyLogin(
            pb.BeginPasskeyLoginRequest(
                client=where, device_proof=person.proof("BeginPasskeyLogin", "", device)
            ),
            timeout=TIMEOUT,
        )
        finished = await self.stub.FinishPasskeyLogin(
            pb.FinishPasskeyLoginRequest(
                ceremony_id=begun.ceremony_id,
                assertion_json=person.authenticator.get(begun.options_json),
                client=where,
                device_proof=person.proof("FinishPasskeyLogin", begun.ceremony_id, device),
            ),
            timeout=TIMEOUT,
        )
        session: pb.SessionTokens = finished.session
        person.session = session
        return session

    async def answer(
        self, person: Person, challenge_id: str, where: common_pb2.ClientContext, **answer: str
    ) -> pb.SessionTokens:
        """Answer a sign-in challenge from the device ``where`` names, proving its key."""
        reply = await self.stub.VerifySecondFactor(
            pb.VerifySecondFactorRequest(
                challenge_id=challenge_id,
                client=where,
                device_proof=person.proof("VerifySecondFactor", challenge_id, where.device_id),
                **answer,
            ),
            timeout=TIMEOUT,
        )
        session: pb.SessionTokens = reply.session
        return session

    async def _answer_with_email_code(
        self, person: Person, challenge_id: str, where: common_pb2.ClientContext
    ) -> pb.SessionTokens:
        before = self._mail_count(person.email)
        await self.stub.SendSignInCode(
            pb.SendSignInCodeRequest(challenge_id=challenge_id), timeout=TIMEOUT
        )
        mail = await next_mail(
            self.mailbox, person.email, subject_is(*SIGN_IN_SUBJECTS), after=before
        )
        return await self.answer(person, challenge_id, where, email_code=code_in(mail))

    async def _answer_with_passkey(
        self, person: Person, challenge_id: str, where: common_pb2.ClientContext
    ) -> pb.SessionTokens:
        assert person.authenticator is not None
        begun = await self.stub.BeginPasskeyLogin(
            pb.BeginPasskeyLoginRequest(
                challenge_id=challenge_id,
                client=where,
                device_proof=person.proof("BeginPasskeyLogin", challenge_id, where.device_id),
            ),
            timeout=TIMEOUT,
        )
        return await self.answer(
            person,
            challenge_id,
            where,
            passkey_assertion_json=person.authenticator.get(begun.options_json),
        )

    async def enrol_totp(self, person: Person, session: pb.SessionTokens | None = None) -> None:
        """Add an authenticator app; keeps its secret and the recovery codes on ``person``.
        The session's device proves its key, as the app does."""
        session = session or self._session_of(person)
        begun = await self.stub.BeginTotpEnrollment(
            pb.BeginTotpEnrollmentRequest(), metadata=bearer(session), timeout=TIMEOUT
        )
        confirmed = await self.stub.ConfirmTotpEnrollment(
            pb.ConfirmTotpEnrollmentRequest(
                enrollment_id=begun.enrollment_id,
                code=await next_totp(begun.secret),
                device_proof=person.session_proof("ConfirmTotpEnrollment", session),
            ),
            metadata=bearer(session),
            timeout=TIMEOUT,
        )
        person.totp_secret = begun.secret
        person.recovery_codes = tuple(confirmed.recovery_codes)

    async def enrol_passkey(
        self,
        person: Person,
        session: pb.SessionTokens | None = None,
        *,
        device: str | None = None,
        name: str = "iPhone",
    ) -> pb.Factor:
        """Register a passkey made by a fresh software authenticator, kept on ``person``."""
        session = session or self._session_of(person)
        device = device or person.device
        authenticator = SoftwareAuthenticator()
        begun = await self.stub.BeginPasskeyRegistration(
            pb.BeginPasskeyRegistrationRequest(client=client(device, person.ip)),
            metadata=bearer(session),
            timeout=TIMEOUT,
        )
        finished = await self.stub.FinishPasskeyRegistration(
            pb.FinishPasskeyRegistrationRequest(
                ceremony_id=begun.ceremony_id,
                attestation_json=authenticator.create(begun.options_json),
                name=name,
                client=client(device, person.ip),
                device_proof=person.session_proof("FinishPasskeyRegistration", session),
            ),
            metadata=bearer(session),
            timeout=TIMEOUT,
        )
        person.authenticator = authenticator
        factor: pb.Factor = finished.factor
        return factor

    async def step_up(
        self, person: Person, session: pb.SessionTokens | None = None
    ) -> pb.SessionTokens:
        """Re-authenticate the session with the person's passkey or authenticator app."""
        session = session or self._session_of(person)
        begun = await self.stub.BeginStepUp(
            pb.BeginStepUpRequest(client=client(person.device, person.ip)),
            metadata=bearer(session),
            timeout=TIMEOUT,
        )
        answer: dict[str, str]
        if person.authenticator is not None and pb.CHALLENGE_METHOD_PASSKEY in begun.methods:
            answer = {
                "passkey_assertion_json": person.authenticator.get(begun.passkey_options_json)
            }
        elif person.totp_secret and pb.CHALLENGE_METHOD_TOTP in begun.methods:
            answer = {"totp_code": await next_totp(person.totp_secret)}
        else:
            answer = {"password": person.password}
        reply = await self.stub.StepUp(
            pb.StepUpRequest(challenge_id=begun.challenge_id, **answer),
            metadata=bearer(session),
            timeout=TIMEOUT,
        )
        raised: pb.SessionTokens = reply.session
        person.session = raised
        return raised

    async def wallet_token(self, person: Person) -> str:
        """A wallet-audience token: signs in if needed, steps up to assurance level 2
        with the person's second factor, then ExchangeToken("wallet"). During a
        cool-off the person's passkey (if enrolled before it) confirms the exchange."""
        session = person.session or await self.sign_in(person)
        if not may_back_a_wallet_token(session):
            # An email or recovery code in the session can never open the wallet,
            # whatever is added later: start a fresh session with the real factor.
            session = await self.sign_in(person)
        if session.assurance_level < 2:
            session = await self.step_up(person, session)
        request = self.exchange_request(person, session)
        try:
            reply = await self.stub.ExchangeToken(
                request, metadata=bearer(session), timeout=TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION or person.authenticator is None:
                raise
            begun = await self.stub.BeginStepUp(
                pb.BeginStepUpRequest(client=client(person.device, person.ip)),
                metadata=bearer(session),
                timeout=TIMEOUT,
            )
            request.challenge_id = begun.challenge_id
            request.passkey_assertion_json = person.authenticator.get(begun.passkey_options_json)
            request.device_proof = person.proof("ExchangeToken", session.access_token)
            reply = await self.stub.ExchangeToken(
                request, metadata=bearer(session), timeout=TIMEOUT
            )
        return str(reply.access_token)

    @staticmethod
    def exchange_request(
        person: Person,
        session: pb.SessionTokens,
        device: str | None = None,
        audience: str = WALLET_AUDIENCE,
    ) -> pb.ExchangeTokenRequest:
        """ExchangeToken's request from ``device`` (the person's phone when not given),
        with its proof bound to the session's access token; send it with ``bearer(session)``."""
        return pb.ExchangeTokenRequest(
            audience=audience,
            client=client(device or person.device, person.ip),
            device_proof=person.proof("ExchangeToken", session.access_token, device),
        )

    async def refresh(
        self, person: Person, refresh_token: str, device: str | None = None
    ) -> pb.SessionTokens:
        """RefreshSession from ``device`` (the person's phone when not given), proving its key."""
        reply = await self.stub.RefreshSession(
            pb.RefreshSessionRequest(
                refresh_token=refresh_token,
                client=client(device or person.device, person.ip),
                device_proof=person.proof("RefreshSession", refresh_token, device),
            ),
            timeout=TIMEOUT,
        )
        session: pb.SessionTokens = reply.session
        return session

    async def new_payer(
        self, wallet: Any, email: str | None = None, device: str = "phone-1"
    ) -> Payer:
        """A registered person with an authenticator app and a wallet token (not yet enrolled)."""
        person = await self.register(email or f"payer-{uuid.uuid4().hex[:12]}@example.jp", device)
        await self.enrol_totp(person, await self.sign_in(person))
        return await self.payer(person, wallet)

    async def payer(self, person: Person, wallet: Any) -> Payer:
        """``person`` with a fresh wallet token, calling ``wallet`` (a stub as ``gateway``)."""
        return Payer(wallet=wallet, person=person, token=await self.wallet_token(person))

    @staticmethod
    def _session_of(person: Person) -> pb.SessionTokens:
        assert person.session is not None, "sign the person in first"
        return person.session


def jpy(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="JPY")


@dataclass
class Payer:
    """A person's wallet calls, each carrying their wallet token and device."""

    wallet: Any
    person: Person
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.token)

    @property
    def client(self) -> common_pb2.ClientContext:
        return client(self.person.device, self.person.ip)

    async def enroll(self) -> wallet_pb2.Wallet:
        reply = await self.wallet.Enroll(
            wallet_pb2.EnrollRequest(client=self.client), metadata=self.metadata, timeout=TIMEOUT
        )
        enrolled: wallet_pb2.Wallet = reply.wallet
        return enrolled

    async def balance(self) -> wallet_pb2.GetBalanceResponse:
        reply: wallet_pb2.GetBalanceResponse = await self.wallet.GetBalance(
            wallet_pb2.GetBalanceRequest(), metadata=self.metadata, timeout=TIMEOUT
        )
        return reply

    async def transactions(self) -> list[wallet_pb2.Transaction]:
        reply = await self.wallet.ListTransactions(
            wallet_pb2.ListTransactionsRequest(), metadata=self.metadata, timeout=TIMEOUT
        )
        return list(reply.transactions)

    async def register_card(
        self, processor_token: str, three_ds_transaction_id: str
    ) -> wallet_pb2.FundingSource:
        reply = await self.wallet.RegisterFundingSource(
            wallet_pb2.RegisterFundingSourceRequest(
                processor_token=processor_token, three_ds_transaction_id=three_ds_transaction_id
            ),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        source: wallet_pb2.FundingSource = reply.funding_source
        return source

    async def top_up_from_card(
        self, funding_source_id: str, amount: int, idempotency_key: str | None = None
    ) -> wallet_pb2.TopUp:
        reply = await self.wallet.TopUpFromCard(
            wallet_pb2.TopUpFromCardRequest(
                funding_source_id=funding_source_id,
                amount=jpy(amount),
                idempotency_key=idempotency_key or str(uuid.uuid4()),
                client=self.client,
            ),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        top_up: wallet_pb2.TopUp = reply.top_up
        return top_up

    async def payment_code(self) -> str:
        reply = await self.wallet.IssuePaymentCode(
            wallet_pb2.IssuePaymentCodeRequest(client=self.client),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        return str(reply.code)

    async def report_unauthorized(
        self, movement_id: str = "", description: str = "this wasn't me"
    ) -> wallet_pb2.ReportUnauthorizedResponse:
        reply: wallet_pb2.ReportUnauthorizedResponse = await self.wallet.ReportUnauthorized(
            wallet_pb2.ReportUnauthorizedRequest(
                movement_id=movement_id,
                description=description,
                idempotency_key=str(uuid.uuid4()),
            ),
            metadata=self.metadata,
            timeout=TIMEOUT,
        )
        return reply
