"""Handlers: external identity providers."""

from __future__ import annotations

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import (
    Context,
    caller_claims,
    refuse_blank,
    session_tokens,
)
from services.runtime.validation import Violations


class ExternalIdRpcs(Handlers):
    async def BeginExternalLogin(
        self, request: pb.BeginExternalLoginRequest, context: Context
    ) -> pb.BeginExternalLoginResponse:
        check = Violations()
        refuse_blank(check, provider=request.provider)
        check.client("client", request.client, required=False)
        check.raise_if_any()
        nonce, endpoint = await self.identity.begin_external_login(request.provider)
        return pb.BeginExternalLoginResponse(nonce=nonce, authorization_endpoint=endpoint)

    async def ExternalLogin(
        self, request: pb.ExternalLoginRequest, context: Context
    ) -> pb.ExternalLoginResponse:
        check = Violations()
        refuse_blank(
            check, provider=request.provider, id_token=request.id_token, nonce=request.nonce
        )
        check.client("client", request.client)
        check.raise_if_any()
        issued = await self.identity.external_login(
            provider=request.provider,
            id_token=request.id_token,
            nonce=request.nonce,
            client=request.client,
        )
        return pb.ExternalLoginResponse(session=session_tokens(issued))

    async def LinkExternalIdentity(
        self, request: pb.LinkExternalIdentityRequest, context: Context
    ) -> pb.LinkExternalIdentityResponse:
        check = Violations()
        refuse_blank(
            check, provider=request.provider, id_token=request.id_token, nonce=request.nonce
        )
        check.raise_if_any()
        await self.identity.link_external(
            caller_claims(),
            provider=request.provider,
            id_token=request.id_token,
            nonce=request.nonce,
        )
        return pb.LinkExternalIdentityResponse()

    async def UnlinkExternalIdentity(
        self, request: pb.UnlinkExternalIdentityRequest, context: Context
    ) -> pb.UnlinkExternalIdentityResponse:
        check = Violations()
        refuse_blank(check, provider=request.provider)
        check.raise_if_any()
        await self.identity.unlink_external(caller_claims(), request.provider)
        return pb.UnlinkExternalIdentityResponse()
