"""Handlers: signing in with a password, a second factor or a passkey."""

from __future__ import annotations

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import (
    CHALLENGE_METHODS,
    Context,
    check_password,
    refuse_blank,
    session_tokens,
    uuid_of,
    uuid_or_none,
)
from services.identity.domain import credentials as cred
from services.identity.domain.sessions import PendingChallenge
from services.runtime.convert import timestamp
from services.runtime.validation import Violations


class SignInRpcs(Handlers):
    async def Login(self, request: pb.LoginRequest, context: Context) -> pb.LoginResponse:
        check = Violations()
        refuse_blank(check, identifier=request.identifier)
        check_password(check, "password", request.password)
        check.client("client", request.client)
        check.raise_if_any()
        result = await self.identity.login(
            identifier=request.identifier,
            password=request.password,
            client=request.client,
            device_proof=request.device_proof,
        )
        if isinstance(result, PendingChallenge):
            return pb.LoginResponse(
                challenge=pb.Challenge(
                    challenge_id=str(result.challenge_id),
                    methods=[CHALLENGE_METHODS[m] for m in result.methods],
                )
            )
        return pb.LoginResponse(session=session_tokens(result))

    async def SendSignInCode(
        self, request: pb.SendSignInCodeRequest, context: Context
    ) -> pb.SendSignInCodeResponse:
        challenge_id = uuid_of(request.challenge_id)
        expires_at = await self.identity.send_sign_in_code(challenge_id)
        return pb.SendSignInCodeResponse(code_expires_at=timestamp(expires_at))

    async def VerifySecondFactor(
        self, request: pb.VerifySecondFactorRequest, context: Context
    ) -> pb.VerifySecondFactorResponse:
        check = Violations()
        challenge_id = uuid_of(request.challenge_id)
        answer = request.WhichOneof("answer")
        value = getattr(request, answer) if answer else ""
        refuse_blank(check, **{answer or "answer": value})
        check.client("client", request.client)
        check.raise_if_any()
        method = {
            "totp_code": cred.TOTP,
            "email_code": cred.EMAIL_CODE,
            "recovery_code": cred.RECOVERY_CODE,
            "passkey_assertion_json": cred.PASSKEY,
        }[answer or ""]
        issued = await self.identity.verify_second_factor(
            challenge_id=challenge_id,
            answer=method,
            value=value,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.VerifySecondFactorResponse(session=session_tokens(issued))

    async def BeginPasskeyLogin(
        self, request: pb.BeginPasskeyLoginRequest, context: Context
    ) -> pb.BeginPasskeyLoginResponse:
        check = Violations()
        check.client("client", request.client)
        check.raise_if_any()
        challenge_id = uuid_or_none(request.challenge_id)
        ceremony_id, options = await self.identity.begin_passkey_login(
            identifier=request.identifier,
            challenge_id=challenge_id,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.BeginPasskeyLoginResponse(ceremony_id=str(ceremony_id), options_json=options)

    async def FinishPasskeyLogin(
        self, request: pb.FinishPasskeyLoginRequest, context: Context
    ) -> pb.FinishPasskeyLoginResponse:
        check = Violations()
        refuse_blank(check, assertion_json=request.assertion_json)
        check.client("client", request.client)
        check.raise_if_any()
        ceremony_id = uuid_of(request.ceremony_id)
        issued = await self.identity.finish_passkey_login(
            ceremony_id=ceremony_id,
            assertion_json=request.assertion_json,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.FinishPasskeyLoginResponse(session=session_tokens(issued))
