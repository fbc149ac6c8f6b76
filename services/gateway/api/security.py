"""Who is calling: the bearer token, the partner behind it, its switch, limits and scopes."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.gateway.domain.errors import Refusal
from services.gateway.domain.partners import Partner, require_scope
from services.gateway.storage import requests as request_store
from services.gateway.use_cases.partners import PartnerDirectory
from services.gateway.use_cases.ports import KillSwitch
from services.gateway.use_cases.tokens import TokenInvalid, TokenService

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="partnerToken",
    description="An access token from POST /oauth/token (client credentials).",
)


@dataclass
class Guard:
    tokens: TokenService
    partners: PartnerDirectory
    switch: KillSwitch
    pool: asyncpg.Pool

    async def partner(self, request: Request, token: str | None) -> Partner:
        def unauthenticated(detail: str) -> Refusal:
            return Refusal(401, "TOKEN_INVALID", detail, headers={"WWW-Authenticate": "Bearer"})

        if not token:
            raise unauthenticated("send Authorization: Bearer <access token>")
        try:
            access = self.tokens.verify(token)
        except TokenInvalid:
            raise unauthenticated("the access token is invalid or expired") from None
        partner = await self.partners.get(access.partner_id)
        if partner is None or not partner.active:
            raise unauthenticated("the access token is invalid or expired")
        # A token lives only as long as the secret or key that minted it, so removing
        # a leaked credential ends its tokens as soon as this replica re-reads the partner.
        if not any(c.credential_id == access.credential_id for c in partner.credentials):
            raise unauthenticated("the access token is invalid or expired")
        if self.switch.suspended(partner.partner_id):
            raise Refusal(403, "PARTNER_SUSPENDED", "this partner's access is suspended")
        # One shared counter per partner and minute in the database, so the limit
        # holds however many replicas answer.
        count, remaining = await request_store.count_request(self.pool, partner.partner_id)
        if count > partner.requests_per_minute:
            raise Refusal(
                429,
                "RATE_LIMITED",
                f"at most {partner.requests_per_minute} requests a minute",
                headers={"Retry-After": str(max(1, int(remaining + 0.999)))},
            )
        request.state.token_scopes = access.scopes
        structlog.contextvars.bind_contextvars(partner_id=str(partner.partner_id))
        return partner


def require(scope: str) -> Callable[..., Awaitable[Partner]]:
    """A dependency: the calling partner, refused unless its token holds ``scope``."""

    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),  # noqa: B008
    ) -> Partner:
        guard: Guard = request.app.state.guard
        partner = await guard.partner(request, credentials.credentials if credentials else None)
        require_scope(request.state.token_scopes, partner, scope)
        return partner

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    dependency.mamoru_scope = scope  # type: ignore[attr-defined]
    return dependency


def uuid_or_404(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Refusal(404, "NOT_FOUND", "no such resource for this partner") from None
