"""Handlers: changing and resetting a password."""

from __future__ import annotations

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import (
    MAX_TOKEN,
    Context,
    caller_claims,
    check_password,
    client_from_claims,
    session_tokens,
)
from services.runtime.validation import Violations


class PasswordRpcs(Handlers):
    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: Context
    ) -> pb.ChangePasswordResponse:
        check = Violations()
        check_password(check, "current_password", request.current_password)
        check_password(check, "new_password", request.new_password)
        check.raise_if_any()
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
        check.text("identifier", request.identifier, max_length=254, required=True)
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
        check.text(
            "reset_token",
            request.reset_token,
            max_length=MAX_TOKEN,
            required=True,
            single_line=True,
        )
        check_password(check, "new_password", request.new_password)
        check.client("client", request.client, required=False)
        check.raise_if_any()
        await self.identity.complete_password_reset(
            reset_token=request.reset_token,
            new_password=request.new_password,
            client=request.client,
        )
        return pb.CompletePasswordResetResponse()
