"""Registering an account and verifying its address."""

from __future__ import annotations

import uuid
from datetime import datetime

from mamoru.common.v1 import common_pb2

from services.identity.clients.notices import (
    Kind,
    send_code_notice,
    send_event_notice,
)
from services.identity.clients.risk import Outcome
from services.identity.domain import credentials as cred
from services.identity.domain.admission import HashBudgetExhausted, Lane, Refusal, parse_ip
from services.identity.domain.errors import invalid_code
from services.identity.domain.login import (
    refuse_before_hashing,
)
from services.identity.domain.sealing import (
    new_code,
)
from services.identity.domain.sessions import (
    CODE_ATTEMPTS,
    CODE_LIFETIME,
)
from services.identity.storage import accounts as account_store
from services.identity.storage import devices as device_store
from services.identity.storage import security_log as log_store
from services.identity.use_cases.base import (
    IdentityBase,
    as_seen,
)
from services.runtime import metrics
from services.runtime.errors import (
    FailedPrecondition,
)


def registration_refused() -> FailedPrecondition:
    return FailedPrecondition(
        "REGISTRATION_REFUSED", "registration is not possible right now; try again later"
    )


class Registration(IdentityBase):
    async def register(
        self,
        *,
        email: str,
        password: str,
        display_name: str | None,
        language: int,
        client: common_pb2.ClientContext,
        device_proof: str = "",
    ) -> datetime:
        policy = self.policies.policy if self.policies is not None else None
        if policy is not None and policy.registration_suspended:
            raise FailedPrecondition(
                "REGISTRATION_SUSPENDED", "registration is suspended; try again later"
            )
        blocked = self.admission.current().blocked(
            parse_ip(client.ip_address), self.admission.country_of
        )
        if blocked is not None:
            metrics.IDENTITY_REFUSED_WITHOUT_HASH.labels(blocked).inc()
            raise registration_refused()
        key = cred.identifier_key(email)
        await self._check_new_password("password", password, email=email, has_second_factor=False)
        # The registration answers only to the device that made it: its proven key, or a
        # marked label for a client without one (which never becomes a trusted device).
        # Risk sees that device too, never a label the client chose.
        client = as_seen(client, await self._proven(device_proof, "Register", email))
        # Risk being away does not stop registration: the address must still be verified.
        assessment = await self.risk.assess_registration(
            email_domain=key.rpartition("@")[2], client=client
        )
        if refuse_before_hashing(assessment.verdict):
            metrics.IDENTITY_REFUSED_WITHOUT_HASH.labels(Refusal.RISK_VERDICT).inc()
            raise registration_refused()
        try:
            password_hash = await self.hasher.hash(password, lane=Lane.NEW_DEVICE)
        except HashBudgetExhausted:
            metrics.IDENTITY_REFUSED_WITHOUT_HASH.labels(Refusal.HASH_BUDGET).inc()
            raise registration_refused() from None
        code = new_code()
        expires_at = self.now() + CODE_LIFETIME
        code_hash = self.box.code_hash(code, purpose="contact")
        async with self.pool.acquire() as conn, conn.transaction():
            await account_store.lock_address(conn, key)
            existing = await account_store.account_by_login(conn, key)
            if existing is not None:
                # The same answer as a new address; only the owner learns someone tried.
                await send_event_notice(
                    conn,
                    account_id=existing["id"],
                    kind=Kind.NOTICE_KIND_REGISTRATION_ATTEMPT,
                    occurred_at=self.now(),
                    ip_address=client.ip_address,
                    device=client.user_agent,
                )
                await log_store.log_event(
                    conn,
                    account_id=existing["id"],
                    kind="registration.attempted",
                    ip=client.ip_address,
                    device_id=client.device_id,
                )
                return expires_at
            # Every registration is a pending account of its own (password, device,
            # profile, code), whoever else registered the address: only the code sent for
            # it activates it, so someone who registers an address they do not hold keeps
            # nothing once its owner verifies. The same device registering again replaces
            # its own earlier registration, and nobody else's.
            await account_store.end_pending_registrations(conn, key, device_id=client.device_id)
            account_id = uuid.uuid4()
            contact_id = await account_store.create_pending_account(
                conn,
                account_id=account_id,
                payer_id=self.pseudonyms.payer_id(account_id),
                password_hash=password_hash,
                display_name=display_name,
                language=language,
                device_id=client.device_id,
                email=email,
                login_key=key,
                code_hash=code_hash,
                code_expires_at=expires_at,
            )
            # Each registration's code notice is its own account's, so notify's
            # per-account limit on codes cannot let someone else's flood of
            # registrations keep the owner's code from the owner.
            await send_code_notice(
                conn,
                account_id=account_id,
                kind=Kind.NOTICE_KIND_CONTACT_VERIFICATION,
                secret=code,
                expires_at=expires_at,
                pending_contact_id=contact_id,
                key=f"identity:contact-code:{uuid.uuid4()}",
            )
        return expires_at

    async def verify_email(
        self, *, email: str, code: str, client: common_pb2.ClientContext, device_proof: str = ""
    ) -> uuid.UUID:
        key = cred.identifier_key(email)
        proven = await self._proven(device_proof, "VerifyEmail", email)
        client = as_seen(client, proven)
        async with self.pool.acquire() as conn, conn.transaction():
            await account_store.lock_address(conn, key)
            # A code answers only for the registration it was sent for, made from this
            # device: a code mailed for someone else's registration of the address
            # activates nothing here, and wrong guesses from elsewhere do not use up
            # this registration's attempts.
            pending = await account_store.pending_registration(conn, key, client.device_id)
            if (
                pending is None
                or pending["code_hash"] is None
                or pending["code_attempts"] >= CODE_ATTEMPTS
                or pending["code_expires_at"] < self.now()
            ):
                raise invalid_code()
            if pending["code_hash"] != self.box.code_hash(code, purpose="contact"):
                await account_store.count_code_attempt(conn, pending["contact_id"])
                failed = True
            else:
                failed = False
                account_id = pending["account_id"]
                if not await account_store.activate_account(
                    conn, account_id=account_id, contact_id=pending["contact_id"], login_key=key
                ):
                    raise invalid_code()
                # Whoever proved the address owns it: every other registration of it ends.
                await account_store.end_pending_registrations(conn, key)
                # Only a proven key becomes the first device: a label anyone could copy
                # must not carry the registration device's privileges.
                await account_store.set_registration_device(
                    conn, account_id, proven.thumbprint if proven is not None else None
                )
                if proven is not None:
                    await device_store.remember_device(
                        conn,
                        account_id=account_id,
                        device=proven,
                        user_agent=client.user_agent,
                        ip=client.ip_address,
                        country="",
                    )
                await log_store.log_event(
                    conn,
                    account_id=account_id,
                    kind="account.registered",
                    ip=client.ip_address,
                    device_id=client.device_id,
                )
        if failed:
            raise invalid_code()
        self.risk.record_outcome(Outcome.OUTCOME_REGISTERED, account_id=account_id, client=client)
        return uuid.UUID(str(account_id))
