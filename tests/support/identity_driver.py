"""People driving identity the way the gateway does for them, over public contracts only.

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

import uuid
from typing import Any

import grpc
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2 as pb

from services.devstack.smtp import LocalSmtpServer
from services.runtime.device_proof import DeviceKey
from tests.support.authenticator import SoftwareAuthenticator
from tests.support.payer import Payer
from tests.support.people import (
    PASSWORD,
    SIGN_IN_SUBJECTS,
    TIMEOUT,
    VERIFICATION_SUBJECTS,
    WALLET_AUDIENCE,
    Person,
    bearer,
    client,
    code_in,
    home_address,
    may_back_a_wallet_token,
    next_mail,
    next_totp,
    subject_is,
)


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
