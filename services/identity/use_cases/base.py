"""What every identity use case shares: its collaborators, issuing a session's tokens,
checking device proofs, and the rules for changing credentials and factors.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from mamoru.common.v1 import common_pb2

from services.identity.clients.admission import PolicyAdmission
from services.identity.clients.external import IdTokenVerifier
from services.identity.clients.hashing import common_passwords
from services.identity.clients.notices import (
    Kind,
    send_event_notice,
)
from services.identity.clients.risk import Outcome
from services.identity.domain import credentials as cred
from services.identity.domain.errors import session_ended
from services.identity.domain.sealing import (
    Pseudonyms,
    SecretBox,
    new_link_token,
    token_hash,
)
from services.identity.domain.sessions import (
    GROUP_AUDIENCE,
    UNPROVEN,
    IssuedSession,
    device_key_of,
    is_recent,
)
from services.identity.settings import IdentitySettings
from services.identity.storage import accounts as account_store
from services.identity.storage import device_proofs as proof_store
from services.identity.storage import devices as device_store
from services.identity.storage import factors as factor_store
from services.identity.storage import security_log as log_store
from services.identity.storage import sessions as session_store
from services.identity.use_cases.keys import KeyRing
from services.identity.use_cases.ports import (
    SYSTEM_CLOCK,
    Admission,
    BreachedPasswords,
    Clock,
    Hasher,
    Risk,
    SignInStore,
)
from services.runtime.countries import bundled_lookup
from services.runtime.device_proof import ProvenDevice, verify_proof
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
)
from services.runtime.peers import TOKEN_ISSUER, PolicyView
from services.runtime.tokens import TokenClaims, sign_token

log = structlog.get_logger(__name__)


def device_ref(client: common_pb2.ClientContext, proven: ProvenDevice | None) -> str:
    """How a request's device is recorded: its key's thumbprint, or its marked label."""
    if proven is not None:
        return proven.thumbprint
    label = client.device_id
    if not label or label.startswith(UNPROVEN):
        return label[: len(UNPROVEN) + 100]
    return f"{UNPROVEN}{label[:100]}"


def as_seen(
    client: common_pb2.ClientContext, proven: ProvenDevice | None
) -> common_pb2.ClientContext:
    """``client`` with its device as identity recorded it, for risk and the audit trail."""
    return common_pb2.ClientContext(
        ip_address=client.ip_address,
        device_id=device_ref(client, proven),
        user_agent=client.user_agent,
    )


class IdentityBase:
    """The collaborators and shared steps of every group of use cases."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: IdentitySettings,
        keys: KeyRing,
        risk: Risk,
        hasher: Hasher,
        box: SecretBox,
        pseudonyms: Pseudonyms,
        policies: PolicyView | None = None,
        sign_in_store: SignInStore,
        pwned: BreachedPasswords | None = None,
        providers: Mapping[str, IdTokenVerifier] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        admission: Admission | None = None,
    ) -> None:
        self.clock = clock
        self.sign_in_store = sign_in_store
        self.pool = pool
        self.settings = settings
        self.keys = keys
        self.risk = risk
        self.hasher = hasher
        self.box = box
        self.pseudonyms = pseudonyms
        self.policies = policies
        self.admission = (
            admission if admission is not None else PolicyAdmission(policies, bundled_lookup)
        )
        self.pwned = pwned
        self.token_lifetime = timedelta(seconds=settings.access_token_seconds)
        self.cooloff = timedelta(hours=settings.cooloff_hours)
        # How long a revocation is remembered and replayed: the session's last token
        # expires by then, and so has what the session made in the wallet (a hold, a
        # cash code), so a wallet back from an outage still hears of it and voids them.
        self.revocation_lifetime = max(
            self.token_lifetime, timedelta(seconds=settings.revocation_replay_seconds)
        ) + timedelta(minutes=1)
        self.providers = dict(providers or {})

    def now(self) -> datetime:
        return self.clock.now()

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
        session = await session_store.open_session(
            conn,
            account_id=account_id,
            device_id=device_ref(client, proven),
            methods=methods,
            assurance_level=cred.assurance_level(methods),
            ip=client.ip_address,
            lifetime=timedelta(days=self.settings.refresh_token_days),
            refresh_hash=token_hash(refresh),
        )
        await log_store.log_event(
            conn,
            account_id=account_id,
            kind="session.opened",
            ip=client.ip_address,
            device_id=client.device_id,
            session_id=session["id"],
            details={"methods": list(methods)},
        )
        return self._issue(session, refresh)

    def _signed_in(
        self,
        decision_id: str,
        account_id: uuid.UUID,
        issued: IssuedSession,
        client: common_pb2.ClientContext,
    ) -> None:
        """Tell risk a sign-in succeeded (after the answer, never delaying it)."""
        self.risk.record_outcome(
            Outcome.OUTCOME_LOGIN_SUCCEEDED,
            decision_id=decision_id,
            account_id=account_id,
            session_id=issued.session_id,
            client=client,
        )

    async def _remember_and_tell(
        self,
        conn: asyncpg.Connection,
        account_id: uuid.UUID,
        proven: ProvenDevice | None,
        client: common_pb2.ClientContext,
        *,
        country: str,
    ) -> bool:
        """Remember the proven key as the account's device; True if it is new there.

        A new key's owner is told, and so is the owner of an account signed in from a
        device that proved no key: that device is a stranger every time."""
        new_device = proven is not None and await device_store.remember_device(
            conn,
            account_id=account_id,
            device=proven,
            user_agent=client.user_agent,
            ip=client.ip_address,
            country=country,
        )
        if new_device or proven is None:
            await send_event_notice(
                conn,
                account_id=account_id,
                kind=Kind.NOTICE_KIND_NEW_DEVICE_SIGN_IN,
                occurred_at=self.now(),
                ip_address=client.ip_address,
                device=client.user_agent,
            )
        return new_device

    def _checked_proof(self, proof: str, rpc: str, bound: str) -> ProvenDevice | None:
        return verify_proof(
            proof, rpc=rpc, bound=bound, max_age_seconds=self.settings.device_proof_seconds
        )

    async def _proven(self, proof: str, rpc: str, bound: str) -> ProvenDevice | None:
        """The device key a request proved, its proof now spent; None for no valid proof
        or one used before (a copy proves nothing)."""
        proven = self._checked_proof(proof, rpc, bound)
        if proven is None or not await proof_store.spend_device_proof(self.pool, proven):
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
            and await device_store.device(conn, account["id"], proven.thumbprint) is not None
        )

    async def live_session(self, claims: TokenClaims) -> Any:
        """The caller's session as stored; a revoked or expired one ends the request."""
        session = await session_store.session(self.pool, uuid.UUID(claims.session_id))
        if (
            session is None
            or session["revoked_at"] is not None
            or session["expires_at"] < self.now()
        ):
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
        other session (see ``session_store.end_begun_with_old_credentials`` for the order)."""
        await session_store.end_begun_with_old_credentials(conn, account_id, keep=keep)
        return await session_store.revoke_sessions(
            conn,
            account_id=account_id,
            reason=reason,
            token_lifetime=self.revocation_lifetime,
            keep=keep,
        )

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

    async def require_recent_auth(self, claims: TokenClaims) -> Any:
        """The session, if its last authentication is recent enough for a sensitive action."""
        session = await self.live_session(claims)
        if not is_recent(session["auth_time"], self.now()):
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
            account = await account_store.account(conn, account_id)
            factors = await factor_store.factors(conn, account_id)
        if account is None:
            raise session_ended()
        allowed = cred.may_change_factors(
            session["methods"],
            # A suspended (cloned) passkey cannot answer a step-up.
            has_usable_factor=any(not factor.suspended for factor in factors),
        )
        if not allowed:
            raise FailedPrecondition(
                "STEP_UP_REQUIRED",
                "re-authenticate with a passkey or authenticator app the account already has"
                " (BeginStepUp and StepUp) in a session without an email code, recovery code"
                " or external ID",
            )
        return session

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
        account = await account_store.account(conn, account_id)
        exempt = (
            first_factor
            and account is not None
            and await self._on_registration_device(conn, account, session, proven)
        )
        await log_store.log_event(
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
            occurred_at=self.now(),
            detail=detail,
            ip_address=client.ip_address,
            device=client.user_agent,
        )
        if not exempt:
            await self._revoke_others(conn, account_id, keep=session["id"], reason=detail)
            await account_store.start_cooloff(conn, account_id, self.cooloff)
            self.risk.record_outcome(
                Outcome.OUTCOME_CREDENTIAL_CHANGED, account_id=account_id, client=client
            )

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
        await account_store.start_cooloff(conn, account_id, self.cooloff)
        await log_store.log_event(
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
            occurred_at=self.now(),
            detail=detail,
            ip_address=client.ip_address,
            device=client.user_agent,
        )
        self.risk.record_outcome(
            Outcome.OUTCOME_CREDENTIAL_CHANGED, account_id=account_id, client=client
        )
