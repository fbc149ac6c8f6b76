"""Handlers: changing and resetting a password."""

from __future__ import annotations

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import (
    Context,
    caller_claims,
    client_from_claims,
    refuse_blank,
    session_tokens,
)
from services.runtime.validation import Violations


class PasswordRpcs(Handlers):
    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: Context
    ) -> pb.ChangePasswordResponse:
        claims = caller_claims()
        issued = await self.identity.change_password(
            claims,
            current_password=request.current_password,
            new_password=request.new_password,
            client=client_from_claims(claims),
        )
        return pb.ChangePasswordResponse(session=session_tokens(issued))

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: Context
    ) -> pb.RequestPasswordResetResponse:
        check = Violations()
        refuse_blank(check, identifier=request.identifier)
        check.client("client", request.client, required=False)
        check.raise_if_any()
        await self.identity.request_password_reset(
            identifier=request.identifier, client=request.client
        )
        return pb.RequestPasswordResetResponse()

    async def CompletePasswordReset(
        self, request: pb.CompletePasswordResetRequest, context: Context
    ) -> pb.CompletePasswordResetResponse:
        check = Violations()
        refuse_blank(check, reset_token=request.reset_token)
        check.client("client", request.client, required=False)
        check.raise_if_any()
        await self.identity.complete_password_reset(
            reset_token=request.reset_token,
            new_password=request.new_password,
            client=request.client,
        )
        return pb.CompletePasswordResetResponse()
