"""Handlers: Register and VerifyEmail."""

from __future__ import annotations

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import (
    Context,
    refuse_blank,
)
from services.runtime.convert import timestamp
from services.runtime.validation import Violations


class RegistrationRpcs(Handlers):
    async def Register(self, request: pb.RegisterRequest, context: Context) -> pb.RegisterResponse:
        check = Violations()
        check.client("client", request.client)
        check.raise_if_any()
        display_name = request.display_name if request.HasField("display_name") else None
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
        refuse_blank(check, code=request.code)
        check.client("client", request.client)
        check.raise_if_any()
        account_id = await self.identity.verify_email(
            email=request.email,
            code=request.code,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.VerifyEmailResponse(account_id=str(account_id))
