"""Handlers: sessions and devices (refresh, sign-out, step-up, exchange, listing, revoking)."""

from __future__ import annotations

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import (
    CHALLENGE_METHODS,
    Context,
    bearer,
    caller_claims,
    device_message,
    refuse_blank,
    session_message,
    session_tokens,
    uuid_of,
    uuid_or_none,
)
from services.identity.domain import credentials as cred
from services.runtime.convert import timestamp
from services.runtime.validation import Violations


class SessionRpcs(Handlers):
    async def RefreshSession(
        self, request: pb.RefreshSessionRequest, context: Context
    ) -> pb.RefreshSessionResponse:
        check = Violations()
        refuse_blank(check, refresh_token=request.refresh_token)
        check.client("client", request.client)
        check.raise_if_any()
        issued = await self.identity.refresh(
            refresh_token=request.refresh_token,
            client=request.client,
            device_proof=request.device_proof,
        )
        return pb.RefreshSessionResponse(session=session_tokens(issued))

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        await self.identity.logout(caller_claims())
        return pb.LogoutResponse()

    async def BeginStepUp(
        self, request: pb.BeginStepUpRequest, context: Context
    ) -> pb.BeginStepUpResponse:
        check = Violations()
        check.client("client", request.client, required=False)
        check.raise_if_any()
        challenge_id, methods, options = await self.identity.begin_step_up(
            caller_claims(), request.client
        )
        return pb.BeginStepUpResponse(
            challenge_id=str(challenge_id),
            methods=[CHALLENGE_METHODS[m] for m in methods if m in CHALLENGE_METHODS],
            passkey_options_json=options,
        )

    async def StepUp(self, request: pb.StepUpRequest, context: Context) -> pb.StepUpResponse:
        check = Violations()
        challenge_id = uuid_of(request.challenge_id)
        answer = request.WhichOneof("answer")
        value = getattr(request, answer) if answer else ""
        if answer != "password":
            # A password may be spaces; a code or an assertion may not.
            refuse_blank(check, **{answer or "answer": value})
        check.raise_if_any()
        method = {
            "totp_code": cred.TOTP,
            "passkey_assertion_json": cred.PASSKEY,
            "password": cred.PASSWORD,
        }[answer or ""]
        issued = await self.identity.step_up(
            caller_claims(), challenge_id=challenge_id, answer=method, value=value
        )
        return pb.StepUpResponse(session=session_tokens(issued))

    async def ExchangeToken(
        self, request: pb.ExchangeTokenRequest, context: Context
    ) -> pb.ExchangeTokenResponse:
        check = Violations()
        refuse_blank(check, audience=request.audience)
        check.client("client", request.client)
        check.raise_if_any()
        challenge_id = uuid_or_none(request.challenge_id)
        token, expires_at = await self.identity.exchange_token(
            caller_claims(),
            audience=request.audience,
            passkey_assertion_json=request.passkey_assertion_json,
            challenge_id=challenge_id,
            client=request.client,
            access_token=bearer(context),
            device_proof=request.device_proof,
        )
        return pb.ExchangeTokenResponse(access_token=token, expires_at=timestamp(expires_at))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        claims = caller_claims()
        rows = await self.identity.list_sessions(claims)
        return pb.ListSessionsResponse(
            sessions=[session_message(row, current=claims.session_id) for row in rows]
        )

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: Context
    ) -> pb.RevokeSessionResponse:
        session_id = uuid_of(request.session_id)
        await self.identity.revoke_session(caller_claims(), session_id)
        return pb.RevokeSessionResponse()

    async def ListDevices(
        self, request: pb.ListDevicesRequest, context: Context
    ) -> pb.ListDevicesResponse:
        rows = await self.identity.list_devices(caller_claims())
        return pb.ListDevicesResponse(devices=[device_message(row) for row in rows])

    async def RevokeDevice(
        self, request: pb.RevokeDeviceRequest, context: Context
    ) -> pb.RevokeDeviceResponse:
        check = Violations()
        refuse_blank(check, device_id=request.device_id)
        check.raise_if_any()
        await self.identity.revoke_device(caller_claims(), request.device_id)
        return pb.RevokeDeviceResponse()
