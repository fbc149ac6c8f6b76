"""Enrolling and removing factors: passkeys, TOTP and recovery codes."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pyotp
import webauthn
from mamoru.common.v1 import common_pb2
from webauthn.helpers.exceptions import InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from services.identity.domain.sealing import (
    new_recovery_code,
    normalise_recovery_code,
)
from services.identity.domain.sessions import (
    CHALLENGE_LIFETIME,
    RECOVERY_CODE_COUNT,
)
from services.identity.storage import challenges as challenge_store
from services.identity.storage import contacts as contact_store
from services.identity.storage import factors as factor_store
from services.identity.storage import passkeys as passkey_store
from services.identity.storage import security_log as log_store
from services.identity.storage import totp as totp_store
from services.identity.use_cases.checks import FactorChecks
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.runtime.tokens import TokenClaims


class Factors(FactorChecks):
    async def begin_passkey_registration(
        self, claims: TokenClaims, client: common_pb2.ClientContext
    ) -> tuple[uuid.UUID, str]:
        session = await self.require_factor_change(claims)
        account_id = session["account_id"]
        primary = await contact_store.primary_email(self.pool, account_id)
        existing = await self._passkey_ids_pool(account_id)
        webauthn_challenge = webauthn.helpers.generate_challenge()
        options = webauthn.generate_registration_options(
            rp_id=self.settings.webauthn_rp_id,
            rp_name="Mamoru",
            user_name=primary["address"] if primary is not None else str(account_id),
            user_id=account_id.bytes,
            challenge=webauthn_challenge,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                require_resident_key=True,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in existing],
        )
        async with self.pool.acquire() as conn:
            ceremony_id = await challenge_store.create_ceremony(
                conn,
                purpose="register",
                account_id=account_id,
                session_id=session["id"],
                device_id=client.device_id,
                webauthn_challenge=webauthn_challenge,
                lifetime=CHALLENGE_LIFETIME,
            )
        return ceremony_id, webauthn.options_to_json(options)

    async def finish_passkey_registration(
        self,
        claims: TokenClaims,
        *,
        ceremony_id: uuid.UUID,
        attestation_json: str,
        name: str,
        client: common_pb2.ClientContext,
        access_token: str = "",
        device_proof: str = "",
    ) -> Any:
        session = await self.require_factor_change(claims)
        proven = await self._proven(device_proof, "FinishPasskeyRegistration", access_token)
        async with self.pool.acquire() as conn, conn.transaction():
            ceremony = await challenge_store.take_ceremony(conn, ceremony_id, "register")
            if ceremony is None or ceremony["session_id"] != session["id"]:
                raise FailedPrecondition("CEREMONY_EXPIRED", "start the passkey registration again")
            try:
                verified = webauthn.verify_registration_response(
                    credential=attestation_json,
                    expected_challenge=bytes(ceremony["webauthn_challenge"]),
                    expected_rp_id=self.settings.webauthn_rp_id,
                    expected_origin=self._origins(),
                    require_user_verification=True,
                )
            except (InvalidRegistrationResponse, ValueError, KeyError, TypeError) as error:
                raise InvalidArgument(
                    [("attestation_json", f"is not a valid attestation: {str(error)[:200]}")]
                ) from None
            account_id = session["account_id"]
            first_factor = not await factor_store.ever_had_factor(conn, account_id)
            factor = await passkey_store.add_passkey(
                conn,
                account_id=account_id,
                name=name,
                credential_id=verified.credential_id,
                public_key=verified.credential_public_key,
                sign_count=verified.sign_count,
            )
            await self._factor_changed(
                conn,
                session,
                client,
                detail="passkey added",
                first_factor=first_factor,
                proven=proven,
            )
        return factor

    async def begin_totp(self, claims: TokenClaims) -> tuple[uuid.UUID, str, str]:
        session = await self.require_factor_change(claims)
        secret = pyotp.random_base32()
        async with self.pool.acquire() as conn:
            factor_id = await totp_store.create_pending_totp(
                conn, session["account_id"], self.box.seal(secret.encode(), purpose="totp")
            )
            primary = await contact_store.primary_email(conn, session["account_id"])
        label = primary["address"] if primary is not None else str(session["account_id"])
        uri = pyotp.TOTP(secret).provisioning_uri(name=label, issuer_name="Mamoru")
        return factor_id, secret, uri

    async def confirm_totp(
        self,
        claims: TokenClaims,
        *,
        enrollment_id: uuid.UUID,
        code: str,
        client: common_pb2.ClientContext,
        access_token: str = "",
        device_proof: str = "",
    ) -> tuple[Any, list[str]]:
        session = await self.require_factor_change(claims)
        proven = await self._proven(device_proof, "ConfirmTotpEnrollment", access_token)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            pending = await totp_store.pending_totp(conn, enrollment_id, account_id)
            if pending is None:
                raise FailedPrecondition("ENROLLMENT_EXPIRED", "start the TOTP enrolment again")
            step = self._totp_step(pending, code)
            if step is None:
                raise InvalidArgument([("code", "does not match the authenticator")])
            first_factor = not await factor_store.ever_had_factor(conn, account_id)
            factor = await totp_store.confirm_factor(conn, enrollment_id, step)
            codes = await self._new_recovery_codes(conn, account_id)
            await self._factor_changed(
                conn,
                session,
                client,
                detail="authenticator app added",
                first_factor=first_factor,
                proven=proven,
            )
        return factor, codes

    async def _new_recovery_codes(
        self, conn: asyncpg.Connection, account_id: uuid.UUID
    ) -> list[str]:
        codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        await totp_store.replace_recovery_codes(
            conn,
            account_id,
            [
                self.box.code_hash(normalise_recovery_code(code), purpose="recovery")
                for code in codes
            ],
        )
        return codes

    async def regenerate_recovery_codes(self, claims: TokenClaims) -> list[str]:
        session = await self.require_factor_change(claims)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await factor_store.factors(conn, session["account_id"]):
                raise FailedPrecondition("NO_SECOND_FACTOR", "enrol a second factor first")
            codes = await self._new_recovery_codes(conn, session["account_id"])
            await log_store.log_event(
                conn,
                account_id=session["account_id"],
                kind="recovery_codes.regenerated",
                session_id=session["id"],
            )
        return codes

    async def list_factors(self, claims: TokenClaims) -> list[Any]:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn:
            return await factor_store.factors(conn, session["account_id"])

    async def remove_factor(
        self, claims: TokenClaims, factor_id: uuid.UUID, client: common_pb2.ClientContext
    ) -> None:
        session = await self.require_factor_change(claims)
        async with self.pool.acquire() as conn, conn.transaction():
            factor = await factor_store.factor(conn, factor_id)
            if factor is None or factor.account_id != session["account_id"]:
                raise NotFound("FACTOR_NOT_FOUND", "no such factor")
            await factor_store.remove_factor(conn, factor_id)
            await self._factor_changed(conn, session, client, detail=f"{factor.kind} removed")
