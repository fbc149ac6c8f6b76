"""Handlers: Register and VerifyEmail."""

from __future__ import annotations

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import (
    MAX_NAME,
    Context,
    check_code,
    check_device_proof,
    check_language,
    check_password,
)
from services.runtime.convert import timestamp
from services.runtime.validation import Violations


class RegistrationRpcs(Handlers):
    async def Register(self, request: pb.RegisterRequest, context: Context) -> pb.RegisterResponse:
        check = Violations()
        check.email("email", request.email)
        check_password(check, "password", request.password)
        display_name = None
        if request.HasField("display_name"):
            display_name = check.text("display_name", request.display_name, max_length=MAX_NAME)
        check_language(check, "language", request.language)
        check.client("client", request.client)
        check_device_proof(check, request.device_proof)
        check.raise_if_any()
        expires_at = await self.identity.register(
            email=request.email,
            password=request.password,
            display_name=display_name,
            language=request.language,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.RegisterResponse(code_expires_at=timestamp(expires_at))

    async def VerifyEmail(
        self, request: pb.VerifyEmailRequest, context: Context
    ) -> pb.VerifyEmailResponse:
        check = Violations()
        check.email("email", request.email)
        check_code(check, "code", request.code)
        check.client("client", request.client)
        check_device_proof(check, request.device_proof)
        check.raise_if_any()
        account_id = await self.identity.verify_email(
            email=request.email,
            code=request.code,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.VerifyEmailResponse(account_id=str(account_id))
