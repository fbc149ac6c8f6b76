"""Sessions and devices: refresh, sign-out, listing and revoking, step-up and token exchange."""

from __future__ import annotations

import uuid
from datetime import datetime

import webauthn
from mamoru.common.v1 import common_pb2

from services.identity.domain import credentials as cred
from services.identity.domain.admission import Lane
from services.identity.domain.errors import invalid_credentials, session_ended
from services.identity.domain.listings import Device, SessionSummary
from services.identity.domain.login import (
    CHALLENGE_ATTEMPTS,
    challenge_methods,
)
from services.identity.domain.sealing import (
    new_link_token,
    token_hash,
)
from services.identity.domain.sessions import (
    CHALLENGE_LIFETIME,
    WALLET_AUDIENCE,
    IssuedSession,
    PresentedRefresh,
    Refresh,
    refresh_outcome,
)
from services.identity.storage import accounts as account_store
from services.identity.storage import challenges as challenge_store
from services.identity.storage import devices as device_store
from services.identity.storage import factors as factor_store
from services.identity.storage import security_log as log_store
from services.identity.storage import sessions as session_store
from services.identity.use_cases.base import (
    as_seen,
)
from services.identity.use_cases.checks import FactorChecks
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.runtime.tokens import TokenClaims


class Sessions(FactorChecks):
    async def refresh(
        self, *, refresh_token: str, client: common_pb2.ClientContext, device_proof: str = ""
    ) -> IssuedSession:
        proven = await self._proven(device_proof, "RefreshSession", refresh_token)
        client = as_seen(client, proven)
        old_hash = token_hash(refresh_token)
        new_refresh = new_link_token()
        reused = False
        async with self.pool.acquire() as conn, conn.transaction():
            row = await session_store.spend_refresh_token(conn, old_hash)
            outcome = refresh_outcome(
                None
                if row is None
                else PresentedRefresh(
                    session_device=row["device_id"],
                    revoked_at=row["revoked_at"],
                    expires_at=row["expires_at"],
                    spent_at=row["spent_at"],
                ),
                device=client.device_id,
                now=self.now(),
            )
            if outcome is Refresh.ENDED or row is None:
                raise session_ended()
            if outcome is Refresh.REUSED:
                await session_store.revoke_sessions(
                    conn,
                    account_id=row["account_id"],
                    reason="refresh token reused",
                    token_lifetime=self.revocation_lifetime,
                    only=row["id"],
                )
                await log_store.log_event(
                    conn,
                    account_id=row["account_id"],
                    kind="session.refresh_reused",
                    ip=client.ip_address,
                    device_id=client.device_id,
                    session_id=row["id"],
                )
                reused = True
            else:
                await session_store.rotate_refresh_token(
                    conn, old_hash=old_hash, new_hash=token_hash(new_refresh), session_id=row["id"]
                )
        if reused:
            raise session_ended()
        return self._issue(row, new_refresh)

    async def logout(self, claims: TokenClaims) -> None:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn, conn.transaction():
            await session_store.revoke_sessions(
                conn,
                account_id=session["account_id"],
                reason="signed out",
                token_lifetime=self.revocation_lifetime,
                only=session["id"],
            )

    async def list_sessions(self, claims: TokenClaims) -> list[SessionSummary]:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn:
            return await session_store.live_sessions(conn, session["account_id"])

    async def revoke_session(self, claims: TokenClaims, session_id: uuid.UUID) -> None:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn, conn.transaction():
            revoked = await session_store.revoke_sessions(
                conn,
                account_id=session["account_id"],
                reason="revoked by owner",
                token_lifetime=self.revocation_lifetime,
                only=session_id,
            )
            if not revoked:
                raise NotFound("SESSION_NOT_FOUND", "no such session")
            await log_store.log_event(
                conn,
                account_id=session["account_id"],
                kind="session.revoked",
                session_id=session_id,
            )

    async def list_devices(self, claims: TokenClaims) -> list[Device]:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn:
            return await device_store.devices(conn, session["account_id"])

    async def revoke_device(self, claims: TokenClaims, device_id: str) -> None:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await device_store.remove_device(conn, session["account_id"], device_id):
                raise NotFound("DEVICE_NOT_FOUND", "no such device")
            await session_store.revoke_sessions(
                conn,
                account_id=session["account_id"],
                reason="device removed",
                token_lifetime=self.revocation_lifetime,
                device_id=device_id,
            )
            await log_store.log_event(
                conn,
                account_id=session["account_id"],
                kind="device.removed",
                device_id=device_id,
                session_id=session["id"],
            )

    async def begin_step_up(
        self, claims: TokenClaims, client: common_pb2.ClientContext
    ) -> tuple[uuid.UUID, list[str], str]:
        session = await self.live_session(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            factors = await factor_store.factors(conn, account_id)
            methods = challenge_methods(
                has_passkey=any(f.usable_passkey for f in factors),
                has_totp=any(f.kind == "totp" for f in factors),
                has_recovery_codes=False,
                has_primary_email=False,
            )
            if not factors:
                methods = [cred.PASSWORD]
            challenge = await challenge_store.create_challenge(
                conn,
                account_id=account_id,
                purpose="step_up",
                session_id=session["id"],
                device_id=session["device_id"],
                ip=client.ip_address,
                user_agent=client.user_agent,
                methods=methods,
                risk_decision_id="",
                known_device=True,
                lifetime=CHALLENGE_LIFETIME,
            )
            options = ""
            if cred.PASSKEY in methods:
                webauthn_challenge = webauthn.helpers.generate_challenge()
                await challenge_store.set_challenge_webauthn(
                    conn, challenge["id"], webauthn_challenge
                )
                allow = await self._passkey_ids(conn, account_id)
                options = self._authentication_options(webauthn_challenge, allow)
        return challenge["id"], methods, options

    async def step_up(
        self, claims: TokenClaims, *, challenge_id: uuid.UUID, answer: str, value: str
    ) -> IssuedSession:
        session = await self.live_session(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            challenge = await challenge_store.open_challenge(conn, challenge_id)
            if (
                challenge is None
                or challenge["purpose"] != "step_up"
                or challenge["session_id"] != session["id"]
            ):
                raise invalid_credentials()
            if answer == cred.PASSWORD and cred.PASSWORD in challenge["methods"]:
                account = await account_store.account(conn, account_id)
                ok = await self.hasher.verify(
                    account["password_hash"] if account else None, value, lane=Lane.NEW_DEVICE
                )
                method: str | None = cred.PASSWORD if ok else None
            else:
                method = await self._check_factor(conn, challenge, answer, value)
            reused = False
            if method is None:
                reused = answer == cred.TOTP and await self._totp_already_used(
                    conn, account_id, value
                )
                await challenge_store.fail_challenge(conn, challenge_id, CHALLENGE_ATTEMPTS)
                await log_store.log_event(
                    conn,
                    account_id=account_id,
                    kind="step_up.failed",
                    session_id=session["id"],
                    details={
                        "method": answer,
                        "reason": "code_already_used" if reused else "wrong_answer",
                    },
                )
            else:
                await challenge_store.complete_challenge(conn, challenge_id)
                methods = sorted({*session["methods"], method})
                raised = await session_store.raise_session(
                    conn, session["id"], methods, cred.assurance_level(methods)
                )
                refresh = new_link_token()
                await session_store.add_refresh_token(
                    conn, session_id=session["id"], token_hash=token_hash(refresh)
                )
                await log_store.log_event(
                    conn,
                    account_id=account_id,
                    kind="step_up.succeeded",
                    session_id=session["id"],
                    details={"method": method},
                )
        if reused:
            # The session already proved the password and the code is the app's own:
            # telling its holder to wait reveals nothing a guesser could use.
            raise FailedPrecondition(
                "TOTP_CODE_ALREADY_USED", "this code was just used; wait for the next one"
            )
        if method is None:
            raise invalid_credentials()
        return self._issue(raised, refresh)

    async def exchange_token(
        self,
        claims: TokenClaims,
        *,
        audience: str,
        passkey_assertion_json: str,
        challenge_id: uuid.UUID | None,
        client: common_pb2.ClientContext,
        access_token: str = "",
        device_proof: str = "",
    ) -> tuple[str, datetime]:
        if audience != WALLET_AUDIENCE:
            raise InvalidArgument([("audience", "only 'wallet' is issued")])
        session = await self.live_session(claims)
        # Bound to the token shown (as DPoP's ath): a stolen group token is not enough.
        proven = await self._proven(device_proof, "ExchangeToken", access_token)
        account_id = session["account_id"]
        if not cred.may_open_wallet(session["methods"]):
            raise PermissionDenied(
                "ASSURANCE_TOO_LOW",
                "the wallet needs a session from a passkey or a password with TOTP",
            )
        async with self.pool.acquire() as conn, conn.transaction():
            account = await account_store.account(conn, account_id)
            if account is None or account["status"] != "active":
                raise session_ended()
            if (
                proven is None
                or session["device_id"] != proven.thumbprint
                or await device_store.device(conn, account_id, proven.thumbprint) is None
            ):
                raise PermissionDenied(
                    "DEVICE_NOT_REGISTERED", "the wallet is only opened from a registered device"
                )
            if account["cooloff_until"] is not None and account["cooloff_until"] > self.now():
                await self._pass_cooloff(
                    conn, session, account, passkey_assertion_json, challenge_id
                )
        payer_id = str(account["payer_id"])
        return self._sign(subject=payer_id, audience=WALLET_AUDIENCE, session=session)
