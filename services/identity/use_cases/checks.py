"""Checking an answer to a challenge: passkey assertions, TOTP codes, recovery and
email codes, and which factors a challenge offers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import pyotp
import structlog
import webauthn
from webauthn.helpers import base64url_to_bytes
from webauthn.helpers.exceptions import InvalidAuthenticationResponse
from webauthn.helpers.structs import (
    PublicKeyCredentialDescriptor,
    UserVerificationRequirement,
)

from services.identity.clients.notices import (
    Kind,
    send_event_notice,
)
from services.identity.domain import credentials as cred
from services.identity.domain.login import (
    challenge_methods,
)
from services.identity.domain.sealing import (
    normalise_recovery_code,
)
from services.identity.domain.sessions import (
    TOTP_STEP_SECONDS,
)
from services.identity.storage import challenges as challenge_store
from services.identity.storage import contacts as contact_store
from services.identity.storage import factors as factor_store
from services.identity.storage import passkeys as passkey_store
from services.identity.storage import security_log as log_store
from services.identity.storage import totp as totp_store
from services.identity.use_cases.base import (
    IdentityBase,
)
from services.runtime.errors import (
    FailedPrecondition,
)

log = structlog.get_logger(__name__)


class FactorChecks(IdentityBase):
    async def _challenge_methods(
        self, conn: asyncpg.Connection, account_id: uuid.UUID
    ) -> list[str]:
        factors = await factor_store.factors(conn, account_id)
        return challenge_methods(
            has_passkey=any(f.usable_passkey for f in factors),
            has_totp=any(f.kind == "totp" for f in factors),
            has_recovery_codes=await totp_store.has_recovery_codes(conn, account_id),
            has_primary_email=await contact_store.primary_email(conn, account_id) is not None,
        )

    async def _check_factor(
        self, conn: asyncpg.Connection, challenge: Any, answer: str, value: str
    ) -> str | None:
        """The method that answered the challenge correctly, or None."""
        account_id = challenge["account_id"]
        if answer not in challenge["methods"]:
            return None
        if answer == cred.TOTP:
            return cred.TOTP if await self._check_totp(conn, account_id, value) else None
        if answer == cred.EMAIL_CODE:
            ok = (
                challenge["email_code_hash"] is not None
                and challenge["email_code_expires_at"] > self.now()
                and challenge["email_code_hash"] == self.box.code_hash(value, purpose="sign-in")
            )
            return cred.EMAIL_CODE if ok else None
        if answer == cred.RECOVERY_CODE:
            code_hash = self.box.code_hash(normalise_recovery_code(value), purpose="recovery")
            used = await totp_store.use_recovery_code(conn, account_id, code_hash)
            return cred.RECOVERY_CODE if used else None
        if answer == cred.PASSKEY:
            if challenge["webauthn_challenge"] is None:
                return None
            factor = await self._check_assertion(
                conn, value, challenge["webauthn_challenge"], account_id=account_id
            )
            return cred.PASSKEY if factor is not None else None
        return None

    async def _check_totp(self, conn: asyncpg.Connection, account_id: uuid.UUID, code: str) -> bool:
        for factor in await factor_store.factors(conn, account_id):
            if factor.kind != "totp":
                continue
            step = self._totp_step(factor, code)
            if step is not None and await totp_store.accept_totp_step(conn, factor.factor_id, step):
                return True
        return False

    async def _totp_already_used(
        self, conn: asyncpg.Connection, account_id: uuid.UUID, code: str
    ) -> bool:
        """Whether ``code`` is right for a time step identity already accepted once."""
        for factor in await factor_store.factors(conn, account_id):
            if factor.kind != "totp" or factor.last_totp_step is None:
                continue
            step = self._totp_step(factor, code)
            if step is not None and step <= factor.last_totp_step:
                return True
        return False

    def _totp_step(self, factor: Any, code: str) -> int | None:
        """The time step (now ±1, for clock drift) whose code matches, if any."""
        secret = self.box.open(factor.sealed_totp_secret, purpose="totp").decode()
        totp = pyotp.TOTP(secret)
        current = int(time.time()) // TOTP_STEP_SECONDS
        for step in (current - 1, current, current + 1):
            if pyotp.utils.strings_equal(totp.at(step * TOTP_STEP_SECONDS), code):
                return step
        return None

    def _origins(self) -> list[str]:
        return list(self.settings.webauthn_origins)

    async def _check_assertion(
        self,
        conn: asyncpg.Connection,
        assertion_json: str,
        expected_challenge: bytes,
        *,
        account_id: uuid.UUID | None,
        enrolled_before: datetime | None = None,
    ) -> Any:
        """The passkey factor that produced a valid assertion, or None.

        A signature counter that went backwards means a cloned authenticator:
        the passkey is suspended and its owner told, even though the signature is valid.
        """
        try:
            body = json.loads(assertion_json)
            credential_id = base64url_to_bytes(body["rawId"])
        except (ValueError, KeyError, TypeError):
            return None
        factor = await passkey_store.passkey_by_credential(conn, credential_id)
        if factor is None or factor.suspended or factor.public_key is None:
            return None
        if account_id is not None and factor.account_id != account_id:
            return None
        if enrolled_before is not None and factor.created_at >= enrolled_before:
            return None
        try:
            # Sign count 0 here: the counter is compared below, after the signature holds.
            verified = webauthn.verify_authentication_response(
                credential=assertion_json,
                expected_challenge=expected_challenge,
                expected_rp_id=self.settings.webauthn_rp_id,
                expected_origin=self._origins(),
                credential_public_key=factor.public_key,
                credential_current_sign_count=0,
                require_user_verification=True,
            )
        except (InvalidAuthenticationResponse, ValueError, KeyError, TypeError) as error:
            log.info("passkey.assertion_refused", error=str(error)[:200])
            return None
        stored, seen = factor.sign_count or 0, verified.new_sign_count
        if (stored > 0 or seen > 0) and seen <= stored:
            await factor_store.suspend_factor(conn, factor.factor_id)
            await log_store.log_event(
                conn,
                account_id=factor.account_id,
                kind="passkey.suspended_cloned",
                details={"factor_id": str(factor.factor_id), "stored": stored, "seen": seen},
            )
            await send_event_notice(
                conn,
                account_id=factor.account_id,
                kind=Kind.NOTICE_KIND_PASSKEY_CLONED,
                occurred_at=self.now(),
                detail=f"passkey {factor.name}"[:200],
            )
            return None
        await passkey_store.record_passkey_use(conn, factor.factor_id, seen)
        return factor

    def _authentication_options(self, challenge: bytes, allow: Sequence[bytes] = ()) -> str:
        options = webauthn.generate_authentication_options(
            rp_id=self.settings.webauthn_rp_id,
            challenge=challenge,
            allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in allow] or None,
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        return webauthn.options_to_json(options)

    async def _passkey_ids(self, conn: asyncpg.Connection, account_id: uuid.UUID) -> list[bytes]:
        return [
            bytes(f.credential_id)
            for f in await factor_store.factors(conn, account_id)
            if f.usable_passkey and f.credential_id is not None
        ]

    async def _passkey_ids_pool(self, account_id: uuid.UUID) -> list[bytes]:
        async with self.pool.acquire() as conn:
            return await self._passkey_ids(conn, account_id)

    async def _pass_cooloff(
        self,
        conn: asyncpg.Connection,
        session: Any,
        account: Any,
        assertion_json: str,
        challenge_id: uuid.UUID | None,
    ) -> None:
        """During a cool-off only a passkey older than the change opens the wallet."""
        refusal = FailedPrecondition(
            "COOLOFF",
            "credentials changed recently; confirm with a passkey enrolled before the change",
            metadata={"until": account["cooloff_until"].isoformat()},
        )
        if not assertion_json or challenge_id is None:
            raise refusal
        challenge = await challenge_store.open_challenge(conn, challenge_id)
        if (
            challenge is None
            or challenge["session_id"] != session["id"]
            or challenge["webauthn_challenge"] is None
        ):
            raise refusal
        factor = await self._check_assertion(
            conn,
            assertion_json,
            bytes(challenge["webauthn_challenge"]),
            account_id=account["id"],
            enrolled_before=account["cooloff_started_at"],
        )
        if factor is None:
            raise refusal
        await challenge_store.complete_challenge(conn, challenge_id)
