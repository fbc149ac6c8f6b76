"""Signing in with, linking and unlinking an external identity provider's ID."""

from __future__ import annotations

import structlog
from mamoru.common.v1 import common_pb2

from services.identity.clients.external import IdTokenVerifier, InvalidIdToken
from services.identity.domain import credentials as cred
from services.identity.domain.errors import invalid_credentials
from services.identity.domain.login import (
    refuse_before_hashing,
)
from services.identity.domain.sealing import (
    new_link_token,
)
from services.identity.domain.sessions import (
    CHALLENGE_LIFETIME,
    IssuedSession,
)
from services.identity.storage import accounts as account_store
from services.identity.storage import external_ids as external_store
from services.identity.use_cases.base import (
    IdentityBase,
    as_seen,
)
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.runtime.tokens import TokenClaims

log = structlog.get_logger(__name__)


class ExternalIds(IdentityBase):
    def _provider(self, name: str) -> IdTokenVerifier:
        verifier = self.providers.get(name)
        if verifier is None:
            raise InvalidArgument([("provider", "is not a configured provider")])
        return verifier

    def _external_suspended(self, name: str) -> bool:
        policy = self.policies.policy if self.policies is not None else None
        return policy is not None and name in policy.external_login_suspended_providers

    async def begin_external_login(self, provider: str) -> tuple[str, str]:
        verifier = self._provider(provider)
        if self._external_suspended(provider):
            raise FailedPrecondition(
                "PROVIDER_SUSPENDED", "sign-in with this provider is suspended"
            )
        nonce = new_link_token()
        async with self.pool.acquire() as conn:
            await external_store.create_external_nonce(
                conn, nonce=nonce, provider=provider, lifetime=CHALLENGE_LIFETIME
            )
        return nonce, verifier.provider.authorization_endpoint

    async def _verified_external(self, provider: str, id_token: str, nonce: str) -> str:
        """The provider's subject, once the token and its single-use nonce check out."""
        verifier = self._provider(provider)
        try:
            claims = await verifier.verify(id_token, nonce=nonce)
        except InvalidIdToken as error:
            log.info("external.id_token_refused", provider=provider, error=str(error))
            raise invalid_credentials() from None
        async with self.pool.acquire() as conn:
            if not await external_store.use_external_nonce(conn, nonce, provider):
                raise invalid_credentials()
        return str(claims["sub"])

    async def external_login(
        self, *, provider: str, id_token: str, nonce: str, client: common_pb2.ClientContext
    ) -> IssuedSession:
        self._provider(provider)
        if self._external_suspended(provider):
            raise FailedPrecondition(
                "PROVIDER_SUSPENDED", "sign-in with this provider is suspended"
            )
        subject = await self._verified_external(provider, id_token, nonce)
        client = as_seen(client, None)
        async with self.pool.acquire() as conn:
            account_id = await external_store.external_account(conn, provider, subject)
        assessment = await self.risk.assess_login(
            account_id=account_id,
            identifier_hash=self.pseudonyms.identifier_hash(f"{provider}:{subject}"),
            client=client,
            known_device=False,
            method=f"external:{provider}",
        )
        if refuse_before_hashing(assessment.verdict) or account_id is None:
            raise invalid_credentials()
        async with self.pool.acquire() as conn, conn.transaction():
            account = await account_store.account(conn, account_id)
            if account is None or account["status"] != "active":
                raise invalid_credentials()
            # Someone else's ID proves one thing at most: the session stays at level 1,
            # and its device is not registered, so the password is still challenged there.
            issued = await self._open_session(
                conn, account_id=account_id, client=client, methods=[cred.EXTERNAL], proven=None
            )
        self._signed_in(assessment.decision_id, account_id, issued, client)
        return issued

    async def link_external(
        self, claims: TokenClaims, *, provider: str, id_token: str, nonce: str
    ) -> None:
        if cred.EXTERNAL in claims.methods:
            raise PermissionDenied(
                "EXTERNAL_SESSION", "an external-ID session cannot link another external ID"
            )
        # A linked ID is one more way in, and it outlives a forced reset: it needs what
        # adding a factor needs, and never a session that leaned on the inbox, so a
        # password and one code from a shared inbox cannot plant the attacker's ID.
        if cred.EMAIL_CODE in claims.methods:
            raise FailedPrecondition(
                "STEP_UP_REQUIRED",
                "sign in with the password on a device the account knows, or step up with"
                " a passkey or authenticator app, before linking an external ID",
            )
        session = await self.require_factor_change(claims)
        subject = await self._verified_external(provider, id_token, nonce)
        client = common_pb2.ClientContext(device_id=session["device_id"])
        async with self.pool.acquire() as conn, conn.transaction():
            if not await external_store.link_external(
                conn, provider=provider, subject=subject, account_id=session["account_id"]
            ):
                raise FailedPrecondition(
                    "ALREADY_LINKED", "this external ID or provider is already linked"
                )
            await self._factor_changed(conn, session, client, detail=f"{provider} ID linked")

    async def unlink_external(self, claims: TokenClaims, provider: str) -> None:
        session = await self.require_recent_auth(claims)
        client = common_pb2.ClientContext(device_id=session["device_id"])
        async with self.pool.acquire() as conn, conn.transaction():
            if not await external_store.unlink_external(
                conn, provider=provider, account_id=session["account_id"]
            ):
                raise NotFound("NOT_LINKED", "no external ID of this provider is linked")
            await self._factor_changed(conn, session, client, detail=f"{provider} ID unlinked")
