"""Identity's use cases: each one a short transaction over storage, plus the calls it owes risk,
notify (through the outbox) and the token signer.

Every sign-in failure, whatever its cause, is the same ``Unauthenticated("INVALID_CREDENTIALS")``
so that no answer tells an attacker whether an account exists.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pyotp
import structlog
import webauthn
from mamoru.common.v1 import common_pb2
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from services.identity import storage
from services.identity.device_proof import ProvenDevice, verify_proof
from services.identity.domain import credentials as cred
from services.identity.domain.login import (
    CHALLENGE_ATTEMPTS,
    RiskVerdict,
    challenge_methods,
    refuse_before_hashing,
    second_factor_need,
)
from services.identity.external import IdTokenVerifier, InvalidIdToken, parse_providers
from services.identity.keys import KeyRing
from services.identity.notices import (
    RESET_REQUEST_TOPIC,
    Kind,
    close_wallet,
    send_code_notice,
    send_event_notice,
)
from services.identity.passwords import PasswordHasher, PwnedRange, common_passwords
from services.identity.risk import Outcome, RiskClient
from services.identity.sealing import (
    Pseudonyms,
    SecretBox,
    new_code,
    new_link_token,
    new_recovery_code,
    normalise_recovery_code,
    token_hash,
)
from services.identity.settings import IdentitySettings
from services.runtime import metrics
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from services.runtime.outbox import NOTIFY_CHANNEL as OUTBOX_CHANNEL
from services.runtime.outbox import OutboxMessage, enqueue
from services.runtime.peers import TOKEN_ISSUER, PolicyView
from services.runtime.tokens import TokenClaims, sign_token

log = structlog.get_logger(__name__)

GROUP_AUDIENCE = "group"
WALLET_AUDIENCE = "wallet"
CODE_LIFETIME = timedelta(minutes=15)
CHALLENGE_LIFETIME = timedelta(minutes=5)
RESET_LIFETIME = timedelta(minutes=30)
# While an unused link is younger than this, a new request mints no other; it matches
# notify's window for coalescing reset notices (NOTIFY_COALESCE_WINDOW_SECONDS).
RESET_REISSUE_AFTER = timedelta(minutes=15)
FREEZE_LIFETIME = timedelta(days=7)
# Sensitive actions need an authentication at most this old.
STEP_UP_WINDOW = timedelta(minutes=10)
CODE_ATTEMPTS = 5
RECOVERY_CODE_COUNT = 10
TOTP_STEP_SECONDS = 30
# Failed sign-ins waiting to be written; beyond this a stuffing run's are dropped.
FAILED_SIGN_IN_BACKLOG = 10_000


def invalid_credentials() -> Unauthenticated:
    return Unauthenticated("INVALID_CREDENTIALS", "invalid credentials")


def session_ended() -> Unauthenticated:
    return Unauthenticated("SESSION_ENDED", "the session has ended; sign in again")


@dataclass(frozen=True)
class IssuedSession:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    session_id: uuid.UUID
    assurance_level: int


@dataclass(frozen=True)
class FailedSignIn:
    """A wrong (or expired) password on a known account, written after the answer."""

    account_id: uuid.UUID
    client: common_pb2.ClientContext
    expired_password: bool


@dataclass(frozen=True)
class PendingChallenge:
    challenge_id: uuid.UUID
    methods: tuple[str, ...]


def _now() -> datetime:
    return datetime.now(UTC)


# A request that proved no device key is recorded by the label it sent, marked so
# that no label can pass for a key's thumbprint (base64url, never a colon).
UNPROVEN = "unproven:"


def device_ref(client: common_pb2.ClientContext, proven: ProvenDevice | None) -> str:
    """How a request's device is recorded: its key's thumbprint, or its marked label."""
    if proven is not None:
        return proven.thumbprint
    label = client.device_id
    if not label or label.startswith(UNPROVEN):
        return label[: len(UNPROVEN) + 100]
    return f"{UNPROVEN}{label[:100]}"


def device_key_of(ref: str) -> str | None:
    """The key thumbprint a recorded device stands for; None for a mere label."""
    return ref if ref and not ref.startswith(UNPROVEN) else None


def as_seen(
    client: common_pb2.ClientContext, proven: ProvenDevice | None
) -> common_pb2.ClientContext:
    """``client`` with its device as identity recorded it, for risk and the audit trail."""
    return common_pb2.ClientContext(
        ip_address=client.ip_address,
        device_id=device_ref(client, proven),
        user_agent=client.user_agent,
    )


class Identity:
    """The use cases behind IdentityService."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: IdentitySettings,
        keys: KeyRing,
        risk: RiskClient,
        hasher: PasswordHasher,
        box: SecretBox,
        pseudonyms: Pseudonyms,
        policies: PolicyView | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.keys = keys
        self.risk = risk
        self.hasher = hasher
        self.box = box
        self.pseudonyms = pseudonyms
        self.policies = policies
        self.pwned = PwnedRange(settings.pwned_range_url) if settings.pwned_range_url else None
        self.token_lifetime = timedelta(seconds=settings.access_token_seconds)
        self.cooloff = timedelta(hours=settings.cooloff_hours)
        # How long a revocation is remembered and replayed: the session's last token
        # expires by then, and so has what the session made in the wallet (a hold, a
        # cash code), so a wallet back from an outage still hears of it and voids them.
        self.revocation_lifetime = max(
            self.token_lifetime, timedelta(seconds=settings.revocation_replay_seconds)
        ) + timedelta(minutes=1)
        self.providers = {
            name: IdTokenVerifier(provider)
            for name, provider in parse_providers(settings.oidc_providers).items()
        }
        self._failed_sign_ins: asyncio.Queue[FailedSignIn] = asyncio.Queue(
            maxsize=FAILED_SIGN_IN_BACKLOG
        )

    # Tokens -------------------------------------------------------------------

    def _sign(
        self,
        *,
        subject: str,
        audience: str,
        session: Any,
    ) -> tuple[str, datetime]:
        now = int(time.time())
        expires = now + self.settings.access_token_seconds
        claims: dict[str, Any] = {
            "sub": subject,
            "aud": audience,
            "iss": TOKEN_ISSUER,
            "sid": str(session["id"]),
            "amr": list(session["methods"]),
            "acr": str(session["assurance_level"]),
            "auth_time": min(int(session["auth_time"].timestamp()), now),
            "iat": now,
            "exp": expires,
            "jti": str(uuid.uuid4()),
        }
        # The key the session's device proved (RFC 7800 confirmation, as in RFC 9449):
        # anyone may read it, but only the device can sign with it.
        device_key = device_key_of(session["device_id"])
        if device_key is not None:
            claims["cnf"] = {"jkt": device_key}
        return sign_token(self.keys.current, claims), datetime.fromtimestamp(expires, UTC)

    def _issue(self, session: Any, refresh_token: str) -> IssuedSession:
        token, expires_at = self._sign(
            subject=str(session["account_id"]),
            audience=GROUP_AUDIENCE,
            session=session,
        )
        return IssuedSession(
            access_token=token,
            access_expires_at=expires_at,
            refresh_token=refresh_token,
            session_id=session["id"],
            assurance_level=session["assurance_level"],
        )

    async def _open_session(
        self,
        conn: asyncpg.Connection,
        *,
        account_id: uuid.UUID,
        client: common_pb2.ClientContext,
        methods: Sequence[str],
        proven: ProvenDevice | None,
    ) -> IssuedSession:
        """Open a session bound to the key the request proved, if it proved one."""
        refresh = new_link_token()
        session = await storage.open_session(
            conn,
            account_id=account_id,
            device_id=device_ref(client, proven),
            methods=methods,
            assurance_level=cred.assurance_level(methods),
            ip=client.ip_address,
            lifetime=timedelta(days=self.settings.refresh_token_days),
            refresh_hash=token_hash(refresh),
        )
        await storage.log_event(
            conn,
            account_id=account_id,
            kind="session.opened",
            ip=client.ip_address,
            device_id=client.device_id,
            session_id=session["id"],
            details={"methods": list(methods)},
        )
        return self._issue(session, refresh)

    # Devices ------------------------------------------------------------------

    def _checked_proof(self, proof: str, rpc: str, bound: str) -> ProvenDevice | None:
        return verify_proof(
            proof, rpc=rpc, bound=bound, max_age_seconds=self.settings.device_proof_seconds
        )

    async def _proven(self, proof: str, rpc: str, bound: str) -> ProvenDevice | None:
        """The device key a request proved, its proof now spent; None for no valid proof
        or one used before (a copy proves nothing)."""
        proven = self._checked_proof(proof, rpc, bound)
        if proven is None or not await storage.spend_device_proof(self.pool, proven):
            return None
        return proven

    async def _on_registration_device(
        self,
        conn: asyncpg.Connection,
        account: Any,
        session: Any,
        proven: ProvenDevice | None,
    ) -> bool:
        """Whether this call comes from the device the account was registered on: its
        key proves itself on the call (bound to the bearer token, so a copied token is
        not enough), the session is that key's, and the device is still registered (a
        removed phone signed in again, by whoever holds it, is a new device)."""
        return (
            proven is not None
            and session["device_id"] == proven.thumbprint
            and account["registration_device_id"] == proven.thumbprint
            and await storage.device(conn, account["id"], proven.thumbprint) is not None
        )

    async def forget_spent_proofs(self, stop: asyncio.Event) -> None:
        """Background job: drop spent proofs once they are too old to be accepted anyway."""
        while not stop.is_set():
            try:
                await storage.purge_device_proofs(self.pool)
            except Exception:
                log.exception("device_proofs.purge_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=60)

    async def live_session(self, claims: TokenClaims) -> Any:
        """The caller's session as stored; a revoked or expired one ends the request."""
        session = await storage.session(self.pool, uuid.UUID(claims.session_id))
        if session is None or session["revoked_at"] is not None or session["expires_at"] < _now():
            raise session_ended()
        return session

    async def _revoke_others(
        self,
        conn: asyncpg.Connection,
        account_id: uuid.UUID,
        *,
        keep: uuid.UUID | None,
        reason: str,
    ) -> list[uuid.UUID]:
        """A credential or contact change: end what was begun before it, then every
        other session (see ``storage.end_begun_with_old_credentials`` for the order)."""
        await storage.end_begun_with_old_credentials(conn, account_id, keep=keep)
        return await storage.revoke_sessions(
            conn,
            account_id=account_id,
            reason=reason,
            token_lifetime=self.revocation_lifetime,
            keep=keep,
        )

    # Passwords ----------------------------------------------------------------

    async def _check_new_password(
        self, field: str, password: str, *, email: str, has_second_factor: bool
    ) -> None:
        problems = cred.password_problems(
            password,
            email=email,
            has_second_factor=has_second_factor,
            common_passwords=common_passwords(),
        )
        if not problems and self.pwned is not None and await self.pwned.is_breached(password):
            problems.append("appears in a known data breach")
        if problems:
            raise InvalidArgument([(field, problem) for problem in problems])

    # Registration -------------------------------------------------------------

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
            metrics.IDENTITY_REFUSED_WITHOUT_HASH.inc()
            raise FailedPrecondition(
                "REGISTRATION_REFUSED", "registration is not possible right now; try again later"
            )
        password_hash = await self.hasher.hash(password)
        code = new_code()
        expires_at = _now() + CODE_LIFETIME
        code_hash = self.box.code_hash(code, purpose="contact")
        async with self.pool.acquire() as conn, conn.transaction():
            await storage.lock_address(conn, key)
            existing = await storage.account_by_login(conn, key)
            if existing is not None:
                # The same answer as a new address; only the owner learns someone tried.
                await send_event_notice(
                    conn,
                    account_id=existing["id"],
                    kind=Kind.NOTICE_KIND_REGISTRATION_ATTEMPT,
                    occurred_at=_now(),
                    ip_address=client.ip_address,
                    device=client.user_agent,
                )
                await storage.log_event(
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
            await storage.end_pending_registrations(conn, key, device_id=client.device_id)
            account_id = uuid.uuid4()
            contact_id = await storage.create_pending_account(
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
            await storage.lock_address(conn, key)
            # A code answers only for the registration it was sent for, made from this
            # device: a code mailed for someone else's registration of the address
            # activates nothing here, and wrong guesses from elsewhere do not use up
            # this registration's attempts.
            pending = await storage.pending_registration(conn, key, client.device_id)
            if (
                pending is None
                or pending["code_hash"] is None
                or pending["code_attempts"] >= CODE_ATTEMPTS
                or pending["code_expires_at"] < _now()
            ):
                raise invalid_code()
            if pending["code_hash"] != self.box.code_hash(code, purpose="contact"):
                await storage.count_code_attempt(conn, pending["contact_id"])
                failed = True
            else:
                failed = False
                account_id = pending["account_id"]
                if not await storage.activate_account(
                    conn, account_id=account_id, contact_id=pending["contact_id"], login_key=key
                ):
                    raise invalid_code()
                # Whoever proved the address owns it: every other registration of it ends.
                await storage.end_pending_registrations(conn, key)
                # Only a proven key becomes the first device: a label anyone could copy
                # must not carry the registration device's privileges.
                await storage.set_registration_device(
                    conn, account_id, proven.thumbprint if proven is not None else None
                )
                if proven is not None:
                    await storage.remember_device(
                        conn,
                        account_id=account_id,
                        device=proven,
                        user_agent=client.user_agent,
                        ip=client.ip_address,
                        country="",
                    )
                await storage.log_event(
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

    # Sign-in ------------------------------------------------------------------

    async def login(
        self,
        *,
        identifier: str,
        password: str,
        client: common_pb2.ClientContext,
        device_proof: str = "",
    ) -> IssuedSession | PendingChallenge:
        key = cred.identifier_key(identifier)
        identifier_hash = self.pseudonyms.identifier_hash(key)
        proven = self._checked_proof(device_proof, "Login", identifier)
        # One statement whether or not the account exists: the work before the answer
        # must not tell a known identifier from an unknown one. It spends the proof.
        account = await storage.login_candidate(self.pool, key, proven)
        account_id = account["id"] if account is not None else None
        if account is None or not account["proof_fresh"]:
            proven = None
        known_device = proven is not None and account is not None and account["known_device"]
        client = as_seen(client, proven)
        assessment = await self.risk.assess_login(
            account_id=account_id,
            identifier_hash=identifier_hash,
            client=client,
            known_device=known_device,
            method="password",
        )
        if refuse_before_hashing(assessment.verdict):
            metrics.IDENTITY_REFUSED_WITHOUT_HASH.inc()
            raise invalid_credentials()
        usable = account is not None and account["status"] == "active"
        matches = await self.hasher.verify(
            account["password_hash"] if usable and account is not None else None, password
        )
        if not (matches and usable and account is not None):
            if account_id is not None:
                self._after_answer(FailedSignIn(account_id, client, expired_password=False))
            self.risk.record_outcome(
                Outcome.OUTCOME_PASSWORD_WRONG,
                decision_id=assessment.decision_id,
                account_id=account_id,
                client=client,
                identifier_hash=identifier_hash,
            )
            raise invalid_credentials()
        account_id = account["id"]
        if account["password_expired"]:
            self._after_answer(FailedSignIn(account_id, client, expired_password=True))
            self.risk.record_outcome(
                Outcome.OUTCOME_PASSWORD_OK,
                decision_id=assessment.decision_id,
                account_id=account_id,
                client=client,
            )
            raise invalid_credentials()
        if self.hasher.needs_rehash(account["password_hash"]):
            new_hash = await self.hasher.hash(password)
            async with self.pool.acquire() as conn:
                await storage.set_password(conn, account_id, new_hash)
        need = second_factor_need(
            verdict=assessment.verdict,
            known_device=known_device,
            recent_failures=account["recent_failures"],
        )
        async with self.pool.acquire() as conn, conn.transaction():
            if not need.required:
                assert proven is not None, "only a proven, registered key skips the second factor"
                await storage.clear_failures(conn, account_id)
                await storage.remember_device(
                    conn,
                    account_id=account_id,
                    device=proven,
                    user_agent=client.user_agent,
                    ip=client.ip_address,
                    country=assessment.country_code,
                )
                issued = await self._open_session(
                    conn,
                    account_id=account_id,
                    client=client,
                    methods=[cred.PASSWORD],
                    proven=proven,
                )
            else:
                methods = await self._challenge_methods(conn, account_id)
                challenge = await storage.create_challenge(
                    conn,
                    account_id=account_id,
                    purpose="login",
                    session_id=None,
                    device_id=client.device_id,
                    ip=client.ip_address,
                    user_agent=client.user_agent,
                    methods=methods,
                    risk_decision_id=assessment.decision_id,
                    known_device=known_device,
                    lifetime=CHALLENGE_LIFETIME,
                )
                await storage.log_event(
                    conn,
                    account_id=account_id,
                    kind="login.second_factor_required",
                    ip=client.ip_address,
                    device_id=client.device_id,
                    details={"reasons": list(need.reasons)},
                )
        if not need.required:
            self.risk.record_outcome(
                Outcome.OUTCOME_LOGIN_SUCCEEDED,
                decision_id=assessment.decision_id,
                account_id=account_id,
                session_id=issued.session_id,
                client=client,
            )
            return issued
        self.risk.record_outcome(
            Outcome.OUTCOME_PASSWORD_OK,
            decision_id=assessment.decision_id,
            account_id=account_id,
            client=client,
        )
        return PendingChallenge(challenge["id"], tuple(methods))

    # Failed sign-ins ------------------------------------------------------------

    def _after_answer(self, failure: FailedSignIn) -> None:
        """Leave a failed sign-in for ``record_failed_sign_ins``: writing it before the
        answer would make a known identifier's answer slower than an unknown one's."""
        try:
            self._failed_sign_ins.put_nowait(failure)
        except asyncio.QueueFull:
            # A stuffing run beyond the backlog: the counters are a signal, not a ledger.
            log.warning("login.failure_not_recorded", account_id=str(failure.account_id))

    async def record_failed_sign_ins(self, stop: asyncio.Event) -> None:
        """Background job: write failed sign-ins, and those still waiting at shutdown."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                waiting = asyncio.ensure_future(self._failed_sign_ins.get())
                await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    break
                await self._write_failed_sign_in(waiting.result())
                await self.flush_failed_sign_ins()
        finally:
            stopping.cancel()
        await self.flush_failed_sign_ins()

    async def flush_failed_sign_ins(self) -> None:
        """Write every failed sign-in waiting now."""
        while not self._failed_sign_ins.empty():
            await self._write_failed_sign_in(self._failed_sign_ins.get_nowait())

    async def _write_failed_sign_in(self, failure: FailedSignIn) -> None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                if failure.expired_password:
                    await self._expired_password_used(conn, failure)
                else:
                    await storage.record_failure(conn, failure.account_id)
                    await storage.log_event(
                        conn,
                        account_id=failure.account_id,
                        kind="login.password_failed",
                        ip=failure.client.ip_address,
                        device_id=failure.client.device_id,
                    )
        except Exception:
            log.exception("login.failure_record_failed", account_id=str(failure.account_id))

    async def _expired_password_used(self, conn: asyncpg.Connection, failure: FailedSignIn) -> None:
        """A forced reset expired this password, yet someone has it. The answer was a wrong
        password's, so a stuffing run cannot learn which leaked pairs were right; the
        owner is told at the registered address (at most once an hour)."""
        client, now = failure.client, _now()
        await storage.log_event(
            conn,
            account_id=failure.account_id,
            kind="login.expired_password_used",
            ip=client.ip_address,
            device_id=client.device_id,
        )
        await send_event_notice(
            conn,
            account_id=failure.account_id,
            kind=Kind.NOTICE_KIND_SECOND_FACTOR_FAILED,
            occurred_at=now,
            detail="sign-in attempted with the expired password; choose a new one",
            ip_address=client.ip_address,
            device=client.user_agent,
            key=f"identity:expired-password-used:{failure.account_id}:{now:%Y%m%d%H}",
        )

    async def _challenge_methods(
        self, conn: asyncpg.Connection, account_id: uuid.UUID
    ) -> list[str]:
        factors = await storage.factors(conn, account_id)
        return challenge_methods(
            has_passkey=any(f["kind"] == "passkey" and not f["suspended"] for f in factors),
            has_totp=any(f["kind"] == "totp" for f in factors),
            has_recovery_codes=await storage.has_recovery_codes(conn, account_id),
            has_primary_email=await storage.primary_email(conn, account_id) is not None,
        )

    async def send_sign_in_code(self, challenge_id: uuid.UUID) -> datetime:
        code = new_code()
        expires_at = _now() + CODE_LIFETIME
        async with self.pool.acquire() as conn, conn.transaction():
            challenge = await storage.open_challenge(conn, challenge_id)
            if challenge is None or cred.EMAIL_CODE not in challenge["methods"]:
                raise invalid_credentials()
            await storage.set_challenge_email_code(
                conn, challenge_id, self.box.code_hash(code, purpose="sign-in"), expires_at
            )
            await send_code_notice(
                conn,
                account_id=challenge["account_id"],
                kind=Kind.NOTICE_KIND_SIGN_IN_CODE,
                secret=code,
                expires_at=expires_at,
                key=f"identity:sign-in-code:{uuid.uuid4()}",
            )
        return expires_at

    async def verify_second_factor(
        self,
        *,
        challenge_id: uuid.UUID,
        answer: str,
        value: str,
        client: common_pb2.ClientContext,
        device_proof: str = "",
    ) -> IssuedSession:
        proven = await self._proven(device_proof, "VerifySecondFactor", str(challenge_id))
        client = as_seen(client, proven)
        async with self.pool.acquire() as conn, conn.transaction():
            challenge = await storage.open_challenge(conn, challenge_id)
            if (
                challenge is None
                or challenge["purpose"] != "login"
                or challenge["device_id"] != client.device_id
            ):
                raise invalid_credentials()
            account_id = challenge["account_id"]
            method = await self._check_factor(conn, challenge, answer, value)
            if method is None:
                await storage.fail_challenge(conn, challenge_id, CHALLENGE_ATTEMPTS)
                await storage.log_event(
                    conn,
                    account_id=account_id,
                    kind="login.second_factor_failed",
                    ip=client.ip_address,
                    device_id=client.device_id,
                    details={"method": answer},
                )
                # The password was right: the owner must hear that someone has it.
                await send_event_notice(
                    conn,
                    account_id=account_id,
                    kind=Kind.NOTICE_KIND_SECOND_FACTOR_FAILED,
                    occurred_at=_now(),
                    ip_address=client.ip_address,
                    device=client.user_agent,
                    key=f"identity:second-factor-failed:{challenge_id}",
                )
            else:
                await storage.complete_challenge(conn, challenge_id)
                await storage.clear_failures(conn, account_id)
                # The key becomes a known device only now, after the second factor.
                new_device = proven is not None and await storage.remember_device(
                    conn,
                    account_id=account_id,
                    device=proven,
                    user_agent=client.user_agent,
                    ip=client.ip_address,
                    country="",
                )
                # A device that proved no key is a stranger every time: its owner is told.
                if new_device or proven is None:
                    await send_event_notice(
                        conn,
                        account_id=account_id,
                        kind=Kind.NOTICE_KIND_NEW_DEVICE_SIGN_IN,
                        occurred_at=_now(),
                        ip_address=client.ip_address,
                        device=client.user_agent,
                    )
                if new_device:
                    await storage.log_event(
                        conn,
                        account_id=account_id,
                        kind="device.added",
                        ip=client.ip_address,
                        device_id=client.device_id,
                    )
                issued = await self._open_session(
                    conn,
                    account_id=account_id,
                    client=client,
                    methods=[cred.PASSWORD, method],
                    proven=proven,
                )
        if method is None:
            self.risk.record_outcome(
                Outcome.OUTCOME_SECOND_FACTOR_FAILED,
                decision_id=challenge["risk_decision_id"],
                account_id=account_id,
                client=client,
            )
            raise invalid_credentials()
        self.risk.record_outcome(
            Outcome.OUTCOME_LOGIN_SUCCEEDED,
            decision_id=challenge["risk_decision_id"],
            account_id=account_id,
            session_id=issued.session_id,
            client=client,
        )
        return issued

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
                and challenge["email_code_expires_at"] > _now()
                and challenge["email_code_hash"] == self.box.code_hash(value, purpose="sign-in")
            )
            return cred.EMAIL_CODE if ok else None
        if answer == cred.RECOVERY_CODE:
            code_hash = self.box.code_hash(normalise_recovery_code(value), purpose="recovery")
            used = await storage.use_recovery_code(conn, account_id, code_hash)
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
        for factor in await storage.factors(conn, account_id):
            if factor["kind"] != "totp":
                continue
            step = self._totp_step(factor, code)
            if step is not None and await storage.accept_totp_step(conn, factor["id"], step):
                return True
        return False

    async def _totp_already_used(
        self, conn: asyncpg.Connection, account_id: uuid.UUID, code: str
    ) -> bool:
        """Whether ``code`` is right for a time step identity already accepted once."""
        for factor in await storage.factors(conn, account_id):
            if factor["kind"] != "totp" or factor["last_totp_step"] is None:
                continue
            step = self._totp_step(factor, code)
            if step is not None and step <= factor["last_totp_step"]:
                return True
        return False

    def _totp_step(self, factor: Any, code: str) -> int | None:
        """The time step (now ±1, for clock drift) whose code matches, if any."""
        secret = self.box.open(factor["sealed_totp_secret"], purpose="totp").decode()
        totp = pyotp.TOTP(secret)
        current = int(time.time()) // TOTP_STEP_SECONDS
        for step in (current - 1, current, current + 1):
            if pyotp.utils.strings_equal(totp.at(step * TOTP_STEP_SECONDS), code):
                return step
        return None

    # Passkeys -----------------------------------------------------------------

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
        factor = await storage.passkey_by_credential(conn, credential_id)
        if factor is None or factor["suspended"]:
            return None
        if account_id is not None and factor["account_id"] != account_id:
            return None
        if enrolled_before is not None and factor["created_at"] >= enrolled_before:
            return None
        try:
            # Sign count 0 here: the counter is compared below, after the signature holds.
            verified = webauthn.verify_authentication_response(
                credential=assertion_json,
                expected_challenge=expected_challenge,
                expected_rp_id=self.settings.webauthn_rp_id,
                expected_origin=self._origins(),
                credential_public_key=factor["public_key"],
                credential_current_sign_count=0,
                require_user_verification=True,
            )
        except (InvalidAuthenticationResponse, ValueError, KeyError, TypeError) as error:
            log.info("passkey.assertion_refused", error=str(error)[:200])
            return None
        stored, seen = factor["sign_count"] or 0, verified.new_sign_count
        if (stored > 0 or seen > 0) and seen <= stored:
            await storage.suspend_factor(conn, factor["id"])
            await storage.log_event(
                conn,
                account_id=factor["account_id"],
                kind="passkey.suspended_cloned",
                details={"factor_id": str(factor["id"]), "stored": stored, "seen": seen},
            )
            await send_event_notice(
                conn,
                account_id=factor["account_id"],
                kind=Kind.NOTICE_KIND_PASSKEY_CLONED,
                occurred_at=_now(),
                detail=f"passkey {factor['name']}"[:200],
            )
            return None
        await storage.record_passkey_use(conn, factor["id"], seen)
        return factor

    def _authentication_options(self, challenge: bytes, allow: Sequence[bytes] = ()) -> str:
        options = webauthn.generate_authentication_options(
            rp_id=self.settings.webauthn_rp_id,
            challenge=challenge,
            allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in allow] or None,
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        return webauthn.options_to_json(options)

    async def begin_passkey_login(
        self,
        *,
        identifier: str,
        challenge_id: uuid.UUID | None,
        client: common_pb2.ClientContext,
        device_proof: str = "",
    ) -> tuple[uuid.UUID, str]:
        proven = await self._proven(
            device_proof, "BeginPasskeyLogin", str(challenge_id) if challenge_id else ""
        )
        client = as_seen(client, proven)
        webauthn_challenge = webauthn.helpers.generate_challenge()
        async with self.pool.acquire() as conn, conn.transaction():
            if challenge_id is not None:
                challenge = await storage.open_challenge(conn, challenge_id)
                if (
                    challenge is None
                    or cred.PASSKEY not in challenge["methods"]
                    or challenge["device_id"] != client.device_id
                ):
                    raise invalid_credentials()
                await storage.set_challenge_webauthn(conn, challenge_id, webauthn_challenge)
                allow = await self._passkey_ids(conn, challenge["account_id"])
                return challenge_id, self._authentication_options(webauthn_challenge, allow)
            # Usernameless even when an identifier is given: listing its credentials would
            # tell anyone whether the account exists.
            ceremony_id = await storage.create_ceremony(
                conn,
                purpose="login",
                account_id=None,
                session_id=None,
                device_id=client.device_id,
                webauthn_challenge=webauthn_challenge,
                lifetime=CHALLENGE_LIFETIME,
            )
        return ceremony_id, self._authentication_options(webauthn_challenge)

    async def _passkey_ids(self, conn: asyncpg.Connection, account_id: uuid.UUID) -> list[bytes]:
        return [
            bytes(f["credential_id"])
            for f in await storage.factors(conn, account_id)
            if f["kind"] == "passkey" and not f["suspended"]
        ]

    async def finish_passkey_login(
        self,
        *,
        ceremony_id: uuid.UUID,
        assertion_json: str,
        client: common_pb2.ClientContext,
        device_proof: str = "",
    ) -> IssuedSession:
        proven = await self._proven(device_proof, "FinishPasskeyLogin", str(ceremony_id))
        client = as_seen(client, proven)
        async with self.pool.acquire() as conn, conn.transaction():
            ceremony = await storage.take_ceremony(conn, ceremony_id, "login")
            if ceremony is None or ceremony["device_id"] != client.device_id:
                raise invalid_credentials()
            factor = await self._check_assertion(
                conn, assertion_json, bytes(ceremony["webauthn_challenge"]), account_id=None
            )
        if factor is None:
            raise invalid_credentials()
        account_id = factor["account_id"]
        known = (
            proven is not None
            and await storage.device(self.pool, account_id, proven.thumbprint) is not None
        )
        assessment = await self.risk.assess_login(
            account_id=account_id,
            identifier_hash="",
            client=client,
            known_device=known,
            method="passkey",
        )
        if refuse_before_hashing(assessment.verdict):
            raise invalid_credentials()
        async with self.pool.acquire() as conn, conn.transaction():
            account = await storage.account(conn, account_id)
            if account is None or account["status"] != "active":
                raise invalid_credentials()
            new_device = proven is not None and await storage.remember_device(
                conn,
                account_id=account_id,
                device=proven,
                user_agent=client.user_agent,
                ip=client.ip_address,
                country=assessment.country_code,
            )
            if new_device or proven is None:
                await send_event_notice(
                    conn,
                    account_id=account_id,
                    kind=Kind.NOTICE_KIND_NEW_DEVICE_SIGN_IN,
                    occurred_at=_now(),
                    ip_address=client.ip_address,
                    device=client.user_agent,
                )
            issued = await self._open_session(
                conn, account_id=account_id, client=client, methods=[cred.PASSKEY], proven=proven
            )
        self.risk.record_outcome(
            Outcome.OUTCOME_LOGIN_SUCCEEDED,
            decision_id=assessment.decision_id,
            account_id=account_id,
            session_id=issued.session_id,
            client=client,
        )
        return issued

    async def begin_passkey_registration(
        self, claims: TokenClaims, client: common_pb2.ClientContext
    ) -> tuple[uuid.UUID, str]:
        session = await self.require_factor_change(claims)
        account_id = session["account_id"]
        primary = await storage.primary_email(self.pool, account_id)
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
            ceremony_id = await storage.create_ceremony(
                conn,
                purpose="register",
                account_id=account_id,
                session_id=session["id"],
                device_id=client.device_id,
                webauthn_challenge=webauthn_challenge,
                lifetime=CHALLENGE_LIFETIME,
            )
        return ceremony_id, webauthn.options_to_json(options)

    async def _passkey_ids_pool(self, account_id: uuid.UUID) -> list[bytes]:
        async with self.pool.acquire() as conn:
            return await self._passkey_ids(conn, account_id)

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
            ceremony = await storage.take_ceremony(conn, ceremony_id, "register")
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
            first_factor = not await storage.ever_had_factor(conn, account_id)
            factor = await storage.add_passkey(
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

    async def _factor_changed(
        self,
        conn: asyncpg.Connection,
        session: Any,
        client: common_pb2.ClientContext,
        *,
        detail: str,
        first_factor: bool = False,
        proven: ProvenDevice | None = None,
    ) -> None:
        """A factor was added or removed: other sessions end, the owner hears, cool-off starts.

        The one exception: the first factor, enrolled on the device the account was
        registered from (``proven`` by its key on this call), is how a new account
        becomes safe, not a takeover sign.
        """
        account_id = session["account_id"]
        account = await storage.account(conn, account_id)
        exempt = (
            first_factor
            and account is not None
            and await self._on_registration_device(conn, account, session, proven)
        )
        await storage.log_event(
            conn,
            account_id=account_id,
            kind="factor.changed",
            ip=client.ip_address,
            device_id=session["device_id"],
            session_id=session["id"],
            details={"detail": detail, "cooloff": not exempt},
        )
        await send_event_notice(
            conn,
            account_id=account_id,
            kind=Kind.NOTICE_KIND_FACTOR_CHANGED,
            occurred_at=_now(),
            detail=detail,
            ip_address=client.ip_address,
            device=client.user_agent,
        )
        if not exempt:
            await self._revoke_others(conn, account_id, keep=session["id"], reason=detail)
            await storage.start_cooloff(conn, account_id, self.cooloff)
            self.risk.record_outcome(
                Outcome.OUTCOME_CREDENTIAL_CHANGED, account_id=account_id, client=client
            )

    # TOTP and recovery codes --------------------------------------------------

    async def begin_totp(self, claims: TokenClaims) -> tuple[uuid.UUID, str, str]:
        session = await self.require_factor_change(claims)
        secret = pyotp.random_base32()
        async with self.pool.acquire() as conn:
            factor_id = await storage.create_pending_totp(
                conn, session["account_id"], self.box.seal(secret.encode(), purpose="totp")
            )
            primary = await storage.primary_email(conn, session["account_id"])
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
            pending = await storage.pending_totp(conn, enrollment_id, account_id)
            if pending is None:
                raise FailedPrecondition("ENROLLMENT_EXPIRED", "start the TOTP enrolment again")
            step = self._totp_step(pending, code)
            if step is None:
                raise InvalidArgument([("code", "does not match the authenticator")])
            first_factor = not await storage.ever_had_factor(conn, account_id)
            factor = await storage.confirm_factor(conn, enrollment_id, step)
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
        await storage.replace_recovery_codes(
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
            if not await storage.factors(conn, session["account_id"]):
                raise FailedPrecondition("NO_SECOND_FACTOR", "enrol a second factor first")
            codes = await self._new_recovery_codes(conn, session["account_id"])
            await storage.log_event(
                conn,
                account_id=session["account_id"],
                kind="recovery_codes.regenerated",
                session_id=session["id"],
            )
        return codes

    async def list_factors(self, claims: TokenClaims) -> list[Any]:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn:
            return await storage.factors(conn, session["account_id"])

    async def remove_factor(
        self, claims: TokenClaims, factor_id: uuid.UUID, client: common_pb2.ClientContext
    ) -> None:
        session = await self.require_factor_change(claims)
        async with self.pool.acquire() as conn, conn.transaction():
            factor = await storage.factor(conn, factor_id)
            if factor is None or factor["account_id"] != session["account_id"]:
                raise NotFound("FACTOR_NOT_FOUND", "no such factor")
            await storage.remove_factor(conn, factor_id)
            await self._factor_changed(conn, session, client, detail=f"{factor['kind']} removed")

    # Sessions -----------------------------------------------------------------

    async def refresh(
        self, *, refresh_token: str, client: common_pb2.ClientContext, device_proof: str = ""
    ) -> IssuedSession:
        proven = await self._proven(device_proof, "RefreshSession", refresh_token)
        client = as_seen(client, proven)
        old_hash = token_hash(refresh_token)
        new_refresh = new_link_token()
        reused = False
        async with self.pool.acquire() as conn, conn.transaction():
            row = await storage.spend_refresh_token(conn, old_hash)
            if row is None or row["revoked_at"] is not None or row["expires_at"] < _now():
                raise session_ended()
            if row["spent_at"] is not None or row["device_id"] != client.device_id:
                # A spent token shown again, or shown without its session's device key,
                # means two holders: end the whole family.
                await storage.revoke_sessions(
                    conn,
                    account_id=row["account_id"],
                    reason="refresh token reused",
                    token_lifetime=self.revocation_lifetime,
                    only=row["id"],
                )
                await storage.log_event(
                    conn,
                    account_id=row["account_id"],
                    kind="session.refresh_reused",
                    ip=client.ip_address,
                    device_id=client.device_id,
                    session_id=row["id"],
                )
                reused = True
            else:
                await storage.rotate_refresh_token(
                    conn, old_hash=old_hash, new_hash=token_hash(new_refresh), session_id=row["id"]
                )
        if reused:
            raise session_ended()
        return self._issue(row, new_refresh)

    async def logout(self, claims: TokenClaims) -> None:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn, conn.transaction():
            await storage.revoke_sessions(
                conn,
                account_id=session["account_id"],
                reason="signed out",
                token_lifetime=self.revocation_lifetime,
                only=session["id"],
            )

    async def list_sessions(self, claims: TokenClaims) -> list[Any]:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn:
            return await storage.live_sessions(conn, session["account_id"])

    async def revoke_session(self, claims: TokenClaims, session_id: uuid.UUID) -> None:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn, conn.transaction():
            revoked = await storage.revoke_sessions(
                conn,
                account_id=session["account_id"],
                reason="revoked by owner",
                token_lifetime=self.revocation_lifetime,
                only=session_id,
            )
            if not revoked:
                raise NotFound("SESSION_NOT_FOUND", "no such session")
            await storage.log_event(
                conn,
                account_id=session["account_id"],
                kind="session.revoked",
                session_id=session_id,
            )

    async def list_devices(self, claims: TokenClaims) -> list[Any]:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn:
            return await storage.devices(conn, session["account_id"])

    async def revoke_device(self, claims: TokenClaims, device_id: str) -> None:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn, conn.transaction():
            if not await storage.remove_device(conn, session["account_id"], device_id):
                raise NotFound("DEVICE_NOT_FOUND", "no such device")
            await storage.revoke_sessions(
                conn,
                account_id=session["account_id"],
                reason="device removed",
                token_lifetime=self.revocation_lifetime,
                device_id=device_id,
            )
            await storage.log_event(
                conn,
                account_id=session["account_id"],
                kind="device.removed",
                device_id=device_id,
                session_id=session["id"],
            )

    # Step-up and token exchange -----------------------------------------------

    async def require_recent_auth(self, claims: TokenClaims) -> Any:
        """The session, if its last authentication is recent enough for a sensitive action."""
        session = await self.live_session(claims)
        if session["auth_time"] < _now() - STEP_UP_WINDOW:
            raise FailedPrecondition(
                "STEP_UP_REQUIRED", "re-authenticate with BeginStepUp and StepUp first"
            )
        return session

    async def require_factor_change(self, claims: TokenClaims) -> Any:
        """The session, if it recently showed what changing the account's factors needs
        (see ``may_change_factors``): a factor the account already has, or the password
        when it has none. Whether the change starts a cool-off is ``_factor_changed``'s."""
        session = await self.require_recent_auth(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn:
            account = await storage.account(conn, account_id)
            factors = await storage.factors(conn, account_id)
        if account is None:
            raise session_ended()
        allowed = cred.may_change_factors(
            session["methods"],
            # A suspended (cloned) passkey cannot answer a step-up.
            has_usable_factor=any(not factor["suspended"] for factor in factors),
        )
        if not allowed:
            raise FailedPrecondition(
                "STEP_UP_REQUIRED",
                "re-authenticate with a passkey or authenticator app the account already has"
                " (BeginStepUp and StepUp) in a session without an email code, recovery code"
                " or external ID",
            )
        return session

    async def begin_step_up(
        self, claims: TokenClaims, client: common_pb2.ClientContext
    ) -> tuple[uuid.UUID, list[str], str]:
        session = await self.live_session(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            factors = await storage.factors(conn, account_id)
            methods = challenge_methods(
                has_passkey=any(f["kind"] == "passkey" and not f["suspended"] for f in factors),
                has_totp=any(f["kind"] == "totp" for f in factors),
                has_recovery_codes=False,
                has_primary_email=False,
            )
            if not factors:
                methods = [cred.PASSWORD]
            challenge = await storage.create_challenge(
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
                await storage.set_challenge_webauthn(conn, challenge["id"], webauthn_challenge)
                allow = await self._passkey_ids(conn, account_id)
                options = self._authentication_options(webauthn_challenge, allow)
        return challenge["id"], methods, options

    async def step_up(
        self, claims: TokenClaims, *, challenge_id: uuid.UUID, answer: str, value: str
    ) -> IssuedSession:
        session = await self.live_session(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            challenge = await storage.open_challenge(conn, challenge_id)
            if (
                challenge is None
                or challenge["purpose"] != "step_up"
                or challenge["session_id"] != session["id"]
            ):
                raise invalid_credentials()
            if answer == cred.PASSWORD and cred.PASSWORD in challenge["methods"]:
                account = await storage.account(conn, account_id)
                ok = await self.hasher.verify(account["password_hash"] if account else None, value)
                method: str | None = cred.PASSWORD if ok else None
            else:
                method = await self._check_factor(conn, challenge, answer, value)
            reused = False
            if method is None:
                reused = answer == cred.TOTP and await self._totp_already_used(
                    conn, account_id, value
                )
                await storage.fail_challenge(conn, challenge_id, CHALLENGE_ATTEMPTS)
                await storage.log_event(
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
                await storage.complete_challenge(conn, challenge_id)
                methods = sorted({*session["methods"], method})
                raised = await storage.raise_session(
                    conn, session["id"], methods, cred.assurance_level(methods)
                )
                refresh = new_link_token()
                await storage.add_refresh_token(
                    conn, session_id=session["id"], token_hash=token_hash(refresh)
                )
                await storage.log_event(
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
            account = await storage.account(conn, account_id)
            if account is None or account["status"] != "active":
                raise session_ended()
            if (
                proven is None
                or session["device_id"] != proven.thumbprint
                or await storage.device(conn, account_id, proven.thumbprint) is None
            ):
                raise PermissionDenied(
                    "DEVICE_NOT_REGISTERED", "the wallet is only opened from a registered device"
                )
            if account["cooloff_until"] is not None and account["cooloff_until"] > _now():
                await self._pass_cooloff(
                    conn, session, account, passkey_assertion_json, challenge_id
                )
        payer_id = str(account["payer_id"])
        return self._sign(subject=payer_id, audience=WALLET_AUDIENCE, session=session)

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
        challenge = await storage.open_challenge(conn, challenge_id)
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
        await storage.complete_challenge(conn, challenge_id)

    # Password change and reset ------------------------------------------------

    async def change_password(
        self,
        claims: TokenClaims,
        *,
        current_password: str,
        new_password: str,
        client: common_pb2.ClientContext,
    ) -> IssuedSession:
        session = await self.live_session(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn:
            account = await storage.account(conn, account_id)
            primary = await storage.primary_email(conn, account_id)
            has_factor = bool(await storage.factors(conn, account_id))
        if account is None or not await self.hasher.verify(
            account["password_hash"], current_password
        ):
            raise InvalidArgument([("current_password", "is not the current password")])
        await self._check_new_password(
            "new_password",
            new_password,
            email=primary["address"] if primary is not None else "",
            has_second_factor=has_factor,
        )
        new_hash = await self.hasher.hash(new_password)
        refresh = new_link_token()
        async with self.pool.acquire() as conn, conn.transaction():
            await storage.set_password(conn, account_id, new_hash)
            await self._credential_changed(
                conn, account_id, keep=session["id"], detail="password changed", client=client
            )
            await storage.add_refresh_token(
                conn, session_id=session["id"], token_hash=token_hash(refresh)
            )
            current = await storage.session(conn, session["id"])
        return self._issue(current, refresh)

    async def _credential_changed(
        self,
        conn: asyncpg.Connection,
        account_id: uuid.UUID,
        *,
        keep: uuid.UUID | None,
        detail: str,
        client: common_pb2.ClientContext,
        kind: Any = Kind.NOTICE_KIND_PASSWORD_CHANGED,
    ) -> None:
        await self._revoke_others(conn, account_id, keep=keep, reason=detail)
        await storage.start_cooloff(conn, account_id, self.cooloff)
        await storage.log_event(
            conn,
            account_id=account_id,
            kind=detail.replace(" ", "."),
            ip=client.ip_address,
            device_id=client.device_id,
        )
        await send_event_notice(
            conn,
            account_id=account_id,
            kind=kind,
            occurred_at=_now(),
            detail=detail,
            ip_address=client.ip_address,
            device=client.user_agent,
        )
        self.risk.record_outcome(
            Outcome.OUTCOME_CREDENTIAL_CHANGED, account_id=account_id, client=client
        )

    async def request_password_reset(
        self, *, identifier: str, client: common_pb2.ClientContext
    ) -> None:
        """Queue the request whatever the identifier: the same single write before the
        answer for a known and an unknown one. ``process_reset_request`` does the rest."""
        request_key = f"identity:reset-request:{uuid.uuid4()}"
        async with self.pool.acquire() as conn, conn.transaction():
            await enqueue(
                conn,
                topic=RESET_REQUEST_TOPIC,
                idempotency_key=request_key,
                payload={
                    "identifier_key": cred.identifier_key(identifier),
                    "ip_address": client.ip_address,
                    "device_id": client.device_id,
                    "user_agent": client.user_agent,
                },
                # What someone typed, possibly no one's address, is not kept.
                scrub=[("identifier_key",)],
            )

    def local_receivers(self) -> dict[str, Callable[[OutboxMessage], Awaitable[None]]]:
        """Outbox topics identity delivers to itself."""
        return {RESET_REQUEST_TOPIC: self.process_reset_request}

    async def process_reset_request(self, message: OutboxMessage) -> None:
        """Make and send the reset link for a queued request, if the account exists.

        At least once: a repeat finds the link it made (and mints no other), and its
        notices carry keys derived from the request, so none is sent twice.
        """
        payload = message.payload
        client = common_pb2.ClientContext(
            ip_address=payload["ip_address"],
            device_id=payload["device_id"],
            user_agent=payload["user_agent"],
        )
        token = new_link_token()
        async with self.pool.acquire() as conn, conn.transaction():
            account = await storage.account_by_login(conn, payload["identifier_key"])
            if account is None or account["status"] not in ("active",):
                return
            account_id = account["id"]
            # One request at a time per account, so two cannot both find no fresh link.
            await storage.account_for_update(conn, account_id)
            if await storage.has_fresh_reset(conn, account_id, within=RESET_REISSUE_AFTER):
                # Anyone can ask; a new link would replace the one the owner may be
                # opening right now, so a flood of requests could keep them from ever
                # resetting. Their link stands, and the attempt is kept.
                await storage.log_event(
                    conn,
                    account_id=account_id,
                    kind="password.reset_repeated",
                    ip=client.ip_address,
                    device_id=client.device_id,
                )
                return
            expires_at = await storage.create_reset(
                conn, account_id=account_id, token_hash=token_hash(token), lifetime=RESET_LIFETIME
            )
            # Addressed to the account, not to anything in the request: notify sends
            # the link to the registered primary email and tells the other channels.
            await send_code_notice(
                conn,
                account_id=account_id,
                kind=Kind.NOTICE_KIND_PASSWORD_RESET,
                secret=token,
                expires_at=expires_at,
                key=f"{message.idempotency_key}:link",
            )
            await send_event_notice(
                conn,
                account_id=account_id,
                kind=Kind.NOTICE_KIND_RESET_REQUESTED,
                occurred_at=message.created_at,
                ip_address=client.ip_address,
                device=client.user_agent,
                key=f"{message.idempotency_key}:told",
            )
            await storage.log_event(
                conn,
                account_id=account_id,
                kind="password.reset_requested",
                ip=client.ip_address,
                device_id=client.device_id,
            )

    async def complete_password_reset(
        self, *, reset_token: str, new_password: str, client: common_pb2.ClientContext
    ) -> None:
        async with self.pool.acquire() as conn:
            account_id = await conn.fetchval(
                "select account_id from password_resets where token_hash = $1"
                " and used_at is null and expires_at > now()",
                token_hash(reset_token),
            )
            if account_id is None:
                raise FailedPrecondition(
                    "RESET_LINK_INVALID", "the reset link is invalid or has expired"
                )
            primary = await storage.primary_email(conn, account_id)
            has_factor = bool(await storage.factors(conn, account_id))
        await self._check_new_password(
            "new_password",
            new_password,
            email=primary["address"] if primary is not None else "",
            has_second_factor=has_factor,
        )
        new_hash = await self.hasher.hash(new_password)
        async with self.pool.acquire() as conn, conn.transaction():
            if await storage.use_reset(conn, token_hash(reset_token)) != account_id:
                raise FailedPrecondition(
                    "RESET_LINK_INVALID", "the reset link is invalid or has expired"
                )
            await storage.set_password(conn, account_id, new_hash)
            await storage.clear_failures(conn, account_id)
            await self._credential_changed(
                conn, account_id, keep=None, detail="password reset", client=client
            )

    # Profile ------------------------------------------------------------------

    async def profile(self, claims: TokenClaims) -> Any:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn:
            return await storage.account(conn, session["account_id"])

    async def update_profile(self, claims: TokenClaims, changes: dict[str, Any]) -> Any:
        session = await self.live_session(claims)
        if "birth_date" in changes and isinstance(changes["birth_date"], str):
            changes["birth_date"] = date.fromisoformat(changes["birth_date"])
        async with self.pool.acquire() as conn, conn.transaction():
            await storage.update_profile(conn, session["account_id"], changes)
            await storage.log_event(
                conn,
                account_id=session["account_id"],
                kind="profile.updated",
                session_id=session["id"],
                details={"fields": sorted(changes)},
            )
            return await storage.account(conn, session["account_id"])

    # Contacts -----------------------------------------------------------------

    async def list_contacts(self, claims: TokenClaims) -> list[Any]:
        session = await self.live_session(claims)
        async with self.pool.acquire() as conn:
            return await storage.contacts(conn, session["account_id"], verified_only=False)

    async def add_contact(
        self,
        claims: TokenClaims,
        *,
        kind: int,
        address: str,
        make_primary: bool,
        access_token: str = "",
        device_proof: str = "",
    ) -> Any:
        session = await self.require_recent_auth(claims)
        moves_links = make_primary and kind == storage.EMAIL
        proven = (
            await self._proven(device_proof, "AddContact", access_token) if moves_links else None
        )
        code = new_code()
        expires_at = _now() + CODE_LIFETIME
        async with self.pool.acquire() as conn, conn.transaction():
            if moves_links:
                await self._may_move_credential_links(conn, session, proven)
            contact = await storage.add_contact(
                conn,
                account_id=session["account_id"],
                kind=kind,
                address=address,
                address_key=cred.identifier_key(address),
                make_primary=moves_links,
                code_hash=self.box.code_hash(code, purpose="contact"),
                code_expires_at=expires_at,
            )
            await send_code_notice(
                conn,
                account_id=session["account_id"],
                kind=Kind.NOTICE_KIND_CONTACT_VERIFICATION,
                secret=code,
                expires_at=expires_at,
                pending_contact_id=contact["id"],
                key=f"identity:contact-code:{uuid.uuid4()}",
            )
            await storage.log_event(
                conn,
                account_id=session["account_id"],
                kind="contact.added",
                session_id=session["id"],
                details={"contact_id": str(contact["id"]), "kind": kind},
            )
        return contact

    async def _may_move_credential_links(
        self, conn: asyncpg.Connection, session: Any, proven: ProvenDevice | None
    ) -> None:
        """The primary email is where reset links and sign-in codes go, so it moves only
        from the device the account was registered on (its key ``proven`` on this very
        call: a copy of a session's token is not the device), or in a session that could open
        the wallet, outside a cool-off: the password with one code from the inbox, or a
        factor enrolled in such a session, must not point the account's resets elsewhere."""
        account = await storage.account(conn, session["account_id"])
        if account is None:
            raise session_ended()
        if await self._on_registration_device(conn, account, session, proven):
            return
        if not cred.may_open_wallet(session["methods"]):
            raise PermissionDenied(
                "ASSURANCE_TOO_LOW",
                "a new primary email needs the device the account was registered on, "
                "or a session from a passkey or a password with TOTP",
            )
        if account["cooloff_until"] is not None and account["cooloff_until"] > _now():
            raise FailedPrecondition(
                "COOLOFF",
                "credentials changed recently; change the primary email from the device "
                "the account was registered on, or after the cool-off",
                metadata={"until": account["cooloff_until"].isoformat()},
            )

    async def verify_contact(self, claims: TokenClaims, *, contact_id: uuid.UUID, code: str) -> Any:
        session = await self.live_session(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            contact = await storage.contact(conn, contact_id)
            if contact is None or contact["account_id"] != account_id or contact["verified"]:
                raise NotFound("CONTACT_NOT_FOUND", "no such pending contact")
            if (
                contact["code_hash"] is None
                or contact["code_attempts"] >= CODE_ATTEMPTS
                or contact["code_expires_at"] < _now()
            ):
                raise invalid_code()
            if contact["code_hash"] != self.box.code_hash(code, purpose="contact"):
                await storage.count_code_attempt(conn, contact_id)
                wrong = True
            else:
                wrong = False
                is_email = contact["kind"] == storage.EMAIL
                if is_email:
                    await storage.lock_address(conn, contact["address_key"])
                old_primary = await storage.primary_email(conn, account_id)
                # An address another account has verified stays with that account: proving
                # the inbox again from elsewhere does not move it (the refusal comes only
                # after the right code, so it tells nothing to whoever lacks the inbox).
                verified = await storage.verify_contact(conn, contact)
                if verified is None:
                    raise FailedPrecondition(
                        "ADDRESS_UNAVAILABLE", "this address cannot be added to the account"
                    )
                if is_email:
                    # The address is now this account's: registrations of it end.
                    await storage.end_pending_registrations(conn, contact["address_key"])
                freeze = new_link_token()
                await storage.create_freeze(
                    conn,
                    token_hash=token_hash(freeze),
                    account_id=account_id,
                    contact_id=contact_id,
                    expires_at=_now() + FREEZE_LIFETIME,
                )
                if old_primary is not None and verified["is_primary"]:
                    # The old address keeps getting this one notice, with the way to stop it.
                    await storage.log_event(
                        conn,
                        account_id=account_id,
                        kind="contact.primary_changed",
                        details={"from": str(old_primary["id"]), "to": str(contact_id)},
                    )
                await send_event_notice(
                    conn,
                    account_id=account_id,
                    kind=Kind.NOTICE_KIND_CONTACT_CHANGED,
                    occurred_at=_now(),
                    detail="contact added",
                    freeze_token=freeze,
                )
                await self._revoke_others(
                    conn, account_id, keep=session["id"], reason="contact changed"
                )
                await storage.start_cooloff(conn, account_id, self.cooloff)
                await storage.log_event(
                    conn,
                    account_id=account_id,
                    kind="contact.verified",
                    session_id=session["id"],
                    details={"contact_id": str(contact_id)},
                )
        if wrong:
            raise invalid_code()
        return verified

    async def remove_contact(self, claims: TokenClaims, contact_id: uuid.UUID) -> None:
        session = await self.require_recent_auth(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            contact = await storage.contact(conn, contact_id)
            if contact is None or contact["account_id"] != account_id:
                raise NotFound("CONTACT_NOT_FOUND", "no such contact")
            if contact["is_primary"]:
                raise FailedPrecondition(
                    "PRIMARY_EMAIL", "make another verified email primary before removing this one"
                )
            await send_event_notice(
                conn,
                account_id=account_id,
                kind=Kind.NOTICE_KIND_CONTACT_CHANGED,
                occurred_at=_now(),
                detail="contact removed",
            )
            await storage.remove_contact(conn, contact_id)
            if contact["verified"]:
                await self._revoke_others(
                    conn, account_id, keep=session["id"], reason="contact removed"
                )
                await storage.start_cooloff(conn, account_id, self.cooloff)
            await storage.log_event(
                conn,
                account_id=account_id,
                kind="contact.removed",
                session_id=session["id"],
                details={"contact_id": str(contact_id)},
            )

    async def freeze_contact_change(self, freeze_token: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            freeze = await storage.use_freeze(conn, token_hash(freeze_token))
            if freeze is None:
                raise FailedPrecondition("FREEZE_LINK_INVALID", "the link is invalid or expired")
            account_id = freeze["account_id"]
            contact = await storage.contact(conn, freeze["contact_id"])
            if contact is not None:
                await storage.remove_contact(conn, contact["id"])
            await storage.restore_contacts_removed_after(
                conn, account_id=account_id, changed_contact_id=freeze["contact_id"]
            )
            if await storage.primary_email(conn, account_id) is None:
                # The previous primary email takes its place again.
                await storage.restore_earliest_primary_email(conn, account_id)
            await storage.end_begun_with_old_credentials(conn, account_id, keep=None)
            await storage.revoke_sessions(
                conn,
                account_id=account_id,
                reason="contact change frozen",
                token_lifetime=self.revocation_lifetime,
            )
            await storage.log_event(
                conn,
                account_id=account_id,
                kind="contact.change_frozen",
                actor="self",
                details={"contact_id": str(freeze["contact_id"])},
            )

    # External IDs -------------------------------------------------------------

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
            await storage.create_external_nonce(
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
            if not await storage.use_external_nonce(conn, nonce, provider):
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
            account_id = await storage.external_account(conn, provider, subject)
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
            account = await storage.account(conn, account_id)
            if account is None or account["status"] != "active":
                raise invalid_credentials()
            # Someone else's ID proves one thing at most: the session stays at level 1,
            # and its device is not registered, so the password is still challenged there.
            issued = await self._open_session(
                conn, account_id=account_id, client=client, methods=[cred.EXTERNAL], proven=None
            )
        self.risk.record_outcome(
            Outcome.OUTCOME_LOGIN_SUCCEEDED,
            decision_id=assessment.decision_id,
            account_id=account_id,
            session_id=issued.session_id,
            client=client,
        )
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
            if not await storage.link_external(
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
            if not await storage.unlink_external(
                conn, provider=provider, account_id=session["account_id"]
            ):
                raise NotFound("NOT_LINKED", "no external ID of this provider is linked")
            await self._factor_changed(conn, session, client, detail=f"{provider} ID unlinked")

    # Closing, locking, audit --------------------------------------------------

    async def close_account(self, claims: TokenClaims, reason: str) -> None:
        # The wallet closes with the account, and a closed account can never claim its
        # balance again: only a session that could open the wallet may close it.
        session = await self.require_factor_change(claims)
        account_id = session["account_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            account = await storage.account_for_update(conn, account_id)
            if account is None:
                raise session_ended()
            await storage.end_begun_with_old_credentials(conn, account_id, keep=None)
            await storage.revoke_sessions(
                conn,
                account_id=account_id,
                reason="account closed",
                token_lifetime=self.revocation_lifetime,
            )
            await storage.set_status(conn, account_id, "closed")
            await storage.log_event(
                conn,
                account_id=account_id,
                kind="account.closed",
                session_id=session["id"],
                details={"reason": reason},
            )
            await send_event_notice(
                conn,
                account_id=account_id,
                kind=Kind.NOTICE_KIND_ACCOUNT_STATUS,
                occurred_at=_now(),
                detail="account closed",
            )
            await storage.release_logins(conn, account_id)
            await close_wallet(conn, payer_id=account["payer_id"])

    async def set_locked(
        self, account_id: uuid.UUID, *, locked: bool, reason: str, actor: str
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            account = await storage.account_for_update(conn, account_id)
            if account is None or account["status"] in ("closed", "pending"):
                raise NotFound("ACCOUNT_NOT_FOUND", "no such open account")
            await storage.set_status(conn, account_id, "locked" if locked else "active")
            if locked:
                await storage.end_begun_with_old_credentials(conn, account_id, keep=None)
                await storage.revoke_sessions(
                    conn,
                    account_id=account_id,
                    reason="account locked",
                    token_lifetime=self.revocation_lifetime,
                )
            await storage.log_event(
                conn,
                account_id=account_id,
                kind="account.locked" if locked else "account.unlocked",
                actor=actor,
                details={"reason": reason},
            )
            await send_event_notice(
                conn,
                account_id=account_id,
                kind=Kind.NOTICE_KIND_ACCOUNT_STATUS,
                occurred_at=_now(),
                detail="account locked" if locked else "account unlocked",
            )

    async def force_credential_reset(
        self,
        *,
        account_ids: Sequence[uuid.UUID],
        all_accounts: bool,
        reason: str,
        resume_job_id: uuid.UUID | None,
        actor: str,
        stop: asyncio.Event,
    ) -> AsyncIterator[ResetProgress]:
        """Run (or resume) a forced reset batch by batch, yielding progress after each."""
        async with self.pool.acquire() as conn:
            if resume_job_id is not None:
                job = await storage.reset_job(conn, resume_job_id)
                if job is None:
                    raise NotFound("JOB_NOT_FOUND", "no such forced reset job")
            else:
                job = await storage.create_reset_job(
                    conn,
                    reason=reason,
                    all_accounts=all_accounts,
                    account_ids=account_ids,
                    created_by=actor,
                )
        yield ResetProgress(job)
        while job["finished_at"] is None and not stop.is_set():
            async with self.pool.acquire() as conn, conn.transaction():
                job = await storage.run_reset_batch(
                    conn,
                    job,
                    batch_size=self.settings.forced_reset_batch,
                    token_lifetime=self.revocation_lifetime,
                    link_lifetime=RESET_LIFETIME,
                    notify_channel=OUTBOX_CHANNEL,
                )
            yield ResetProgress(job)

    async def security_log(
        self, account_id: uuid.UUID, *, page_size: int, page_token: str
    ) -> tuple[list[Any], str]:
        before = decode_page_token(page_token) if page_token else None
        async with self.pool.acquire() as conn:
            if await storage.account(conn, account_id) is None:
                raise NotFound("ACCOUNT_NOT_FOUND", "no such account")
            rows = await storage.security_events(
                conn, account_id, before=before, limit=page_size + 1
            )
        next_token = ""
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            next_token = encode_page_token(last["occurred_at"], last["id"])
        return rows, next_token

    async def registered_contacts(
        self,
        *,
        account_id: uuid.UUID | None,
        payer_id: uuid.UUID | None,
        pending_contact_id: uuid.UUID | None,
    ) -> tuple[Any, list[Any]]:
        async with self.pool.acquire() as conn:
            if account_id is not None:
                account = await storage.account(conn, account_id)
            else:
                assert payer_id is not None
                account = await storage.account_by_payer(conn, payer_id)
            if account is None:
                raise NotFound("ACCOUNT_NOT_FOUND", "no such account")
            contacts = list(await storage.contacts(conn, account["id"], verified_only=True))
            if pending_contact_id is not None:
                pending = await storage.contact(conn, pending_contact_id)
                if pending is None or pending["account_id"] != account["id"]:
                    raise NotFound("CONTACT_NOT_FOUND", "no such pending contact")
                # A code notice delivered late, after the address was verified, still
                # finds its contact (already among the verified ones).
                if not pending["verified"]:
                    contacts.append(pending)
        return account, contacts


class ResetProgress:
    """Progress of a forced credential reset job."""

    def __init__(self, job: Any) -> None:
        self.job_id: uuid.UUID = job["id"]
        self.processed: int = job["processed"]
        self.total: int = job["total"]
        self.done: bool = job["finished_at"] is not None


def invalid_code() -> FailedPrecondition:
    return FailedPrecondition("CODE_INVALID", "the code is wrong or has expired")


def encode_page_token(occurred_at: datetime, event_id: uuid.UUID) -> str:
    raw = f"{occurred_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    try:
        stamp, _, event_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return datetime.fromisoformat(stamp), uuid.UUID(event_id)
    except ValueError:
        raise InvalidArgument([("page.page_token", "is not a token from this list")]) from None


__all__ = ["Identity", "IssuedSession", "PendingChallenge", "RiskVerdict", "bytes_to_base64url"]
