"""Signing in with a password or a passkey, and what a failed sign-in leaves behind.

Every sign-in failure, whatever its cause, is the same ``Unauthenticated("INVALID_CREDENTIALS")``
so that no answer tells an attacker whether an account exists.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from typing import Any, NoReturn

import asyncpg
import webauthn
from mamoru.common.v1 import common_pb2

from services.identity.clients.notices import (
    Kind,
    send_event_notice,
)
from services.identity.clients.risk import Outcome
from services.identity.domain import credentials as cred
from services.identity.domain.admission import (
    AdmissionPolicy,
    AdmittedPlace,
    HashBudgetExhausted,
    IpAddress,
    Lane,
    Refusal,
    new_device_refusal,
    parse_ip,
    past_failure_cap,
)
from services.identity.domain.errors import invalid_credentials
from services.identity.domain.login import (
    FailedSignIn,
    refuse_before_hashing,
    second_factor_need,
)
from services.identity.domain.sessions import (
    CHALLENGE_LIFETIME,
    IssuedSession,
    PendingChallenge,
)
from services.identity.storage import accounts as account_store
from services.identity.storage import challenges as challenge_store
from services.identity.storage import devices as device_store
from services.identity.storage import security_log as log_store
from services.identity.use_cases.base import as_seen
from services.identity.use_cases.checks import FactorChecks
from services.identity.use_cases.ports import Assessment
from services.runtime import metrics
from services.runtime.outbox import OutboxMessage, remember_once


class SignIn(FactorChecks):
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
        # Admission before anything costly. Whatever is refused here is refused alike for
        # a known identifier and an unknown one: nothing about the account is read yet.
        policy = self.admission.current()
        address = parse_ip(client.ip_address)
        blocked = policy.blocked(address, self.admission.country_of)
        if blocked is not None:
            self._refuse_unasked(blocked, as_seen(client, None), identifier_hash)
        proven = self._checked_proof(device_proof, "Login", identifier)
        if proven is None:
            # No proof, no known device: refusable with no database work at all.
            self._admit_new_device(
                policy, address, as_seen(client, None), identifier_hash, take_place=False
            )
        # One statement whether or not the account exists: the work before the answer
        # must not tell a known identifier from an unknown one. It spends the proof.
        account = await self.sign_in_store.login_candidate(key, proven)
        account_id = account["id"] if account is not None else None
        if account is None or not account["proof_fresh"]:
            proven = None
        known_device = proven is not None and account is not None and account["known_device"]
        client = as_seen(client, proven)
        # A stranger takes its place in the hashing lane before risk is asked, so that
        # risk is not asked about attempts the lane could not hash.
        place = (
            None
            if known_device
            else self._admit_new_device(policy, address, client, identifier_hash, take_place=True)
        )
        try:
            assessment, matches = await self._assess_and_verify(
                account,
                password,
                identifier_hash=identifier_hash,
                client=client,
                known_device=known_device,
                place=place,
            )
        finally:
            if place is not None:
                place.give_up()
        usable = account is not None and account["status"] == "active"
        if not (matches and usable and account is not None):
            await self._count_after_answer(account_id, client, expired_password=False)
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
            await self._count_after_answer(account_id, client, expired_password=True)
            self.risk.record_outcome(
                Outcome.OUTCOME_PASSWORD_OK,
                decision_id=assessment.decision_id,
                account_id=account_id,
                client=client,
            )
            raise invalid_credentials()
        if self.hasher.needs_rehash(account["password_hash"]):
            with contextlib.suppress(HashBudgetExhausted):
                # The stronger hash can wait for a sign-in with room for it.
                lane = Lane.KNOWN_DEVICE if known_device else Lane.NEW_DEVICE
                new_hash = await self.hasher.hash(password, lane=lane)
                async with self.pool.acquire() as conn:
                    await account_store.set_password(conn, account_id, new_hash)
        need = second_factor_need(
            verdict=assessment.verdict,
            known_device=known_device,
            recent_failures=account["recent_failures"],
        )
        async with self.pool.acquire() as conn, conn.transaction():
            if not need.required:
                assert proven is not None, "only a proven, registered key skips the second factor"
                await account_store.clear_failures(conn, account_id)
                await device_store.remember_device(
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
                challenge = await challenge_store.create_challenge(
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
                await log_store.log_event(
                    conn,
                    account_id=account_id,
                    kind="login.second_factor_required",
                    ip=client.ip_address,
                    device_id=client.device_id,
                    details={"reasons": list(need.reasons)},
                )
        if not need.required:
            self._signed_in(assessment.decision_id, account_id, issued, client)
            return issued
        self.risk.record_outcome(
            Outcome.OUTCOME_PASSWORD_OK,
            decision_id=assessment.decision_id,
            account_id=account_id,
            client=client,
        )
        return PendingChallenge(challenge["id"], tuple(methods))

    async def _assess_and_verify(
        self,
        account: Any,
        password: str,
        *,
        identifier_hash: str,
        client: common_pb2.ClientContext,
        known_device: bool,
        place: AdmittedPlace | None,
    ) -> tuple[Assessment, bool]:
        """Risk's verdict, then the password checked within the hashing budget, unless
        the verdict or the failure cap refuses the attempt first."""
        assessment = await self.risk.assess_login(
            account_id=account["id"] if account is not None else None,
            identifier_hash=identifier_hash,
            client=client,
            known_device=known_device,
            method="password",
        )
        if refuse_before_hashing(assessment.verdict):
            metrics.IDENTITY_REFUSED_WITHOUT_HASH.labels(Refusal.RISK_VERDICT).inc()
            raise invalid_credentials()
        if not known_device:
            # The policy may have changed while risk was asked: a wave that began since
            # admission ends the attempt before its hash too.
            self._refuse_if_contained_now(client)
        usable = account is not None and account["status"] == "active"
        try:
            if (
                not known_device
                and account is not None
                and past_failure_cap(account["recent_failures"])
            ):
                # Guessing at this account from strangers' devices is over until its
                # owner signs in. No hash is computed, but the attempt waits in the lane
                # for a hash's time and is then counted as a wrong password is: nothing
                # tells an account at the cap from an identifier that names none.
                await self.hasher.stand_in(lane=Lane.NEW_DEVICE, place=place)
                metrics.IDENTITY_REFUSED_WITHOUT_HASH.labels(Refusal.FAILURE_CAP).inc()
                return assessment, False
            matches = await self.hasher.verify(
                account["password_hash"] if usable else None,
                password,
                lane=Lane.KNOWN_DEVICE if known_device else Lane.NEW_DEVICE,
                place=place,
            )
        except HashBudgetExhausted:
            metrics.IDENTITY_REFUSED_WITHOUT_HASH.labels(Refusal.HASH_BUDGET).inc()
            if known_device:
                # Only the holder of a key registered to the account gets here, so "busy,
                # try again" tells nobody else anything about the account.
                raise
            raise invalid_credentials() from None
        return assessment, matches

    def _admit_new_device(
        self,
        policy: AdmissionPolicy,
        address: IpAddress | None,
        client: common_pb2.ClientContext,
        identifier_hash: str,
        *,
        take_place: bool,
    ) -> AdmittedPlace | None:
        """Refuse a device the account does not know, before risk is asked, when its
        network is contained, a stuffing wave is on, or the strangers' hashing lane is
        full; with ``take_place``, the place in the lane it is admitted to."""
        now = self.now()
        contained = policy.contained(address, now)
        wave = policy.wave(now)
        place = None
        if contained or wave:
            room = False
        elif take_place:
            place = self.hasher.admit(Lane.NEW_DEVICE)
            room = place is not None
        else:
            room = self.hasher.has_room(Lane.NEW_DEVICE)
        refusal = new_device_refusal(contained=contained, wave=wave, hash_room=room)
        if refusal is not None:
            self._refuse_unasked(refusal, client, identifier_hash)
        return place

    def _refuse_if_contained_now(self, client: common_pb2.ClientContext) -> None:
        """Refuse a device the account does not know if its network is contained or a
        stuffing wave is on now (risk was asked about it, so nothing is reported)."""
        policy = self.admission.current()
        now = self.now()
        address = parse_ip(client.ip_address)
        if policy.contained(address, now):
            refusal = Refusal.CONTAINED_NETWORK
        elif policy.wave(now):
            refusal = Refusal.STUFFING_WAVE
        else:
            return
        metrics.IDENTITY_REFUSED_WITHOUT_HASH.labels(refusal).inc()
        raise invalid_credentials()

    def _refuse_blocked(self, client: common_pb2.ClientContext) -> None:
        """A passkey sign-in from a blocked network or country ends before any work,
        as a password's does (no password is tried, so none is counted)."""
        if self.admission.current().blocked(parse_ip(client.ip_address), self.admission.country_of):
            raise invalid_credentials()

    def _refuse_unasked(
        self, refusal: Refusal, client: common_pb2.ClientContext, identifier_hash: str
    ) -> NoReturn:
        """Answer as a wrong password, with no hash, no write and no call waited for.

        Risk was not asked, so it hears of the attempt as the failure it is (sampled
        past a rate), and a wave it contains stays in its counts. Nothing is counted
        against an account: its password was never tried. Attempts risk refused on its
        own verdict are not reported: its decision already counts them."""
        metrics.IDENTITY_REFUSED_WITHOUT_HASH.labels(refusal).inc()
        self.risk.report_refusal(client=client, identifier_hash=identifier_hash)
        raise invalid_credentials()

    async def _count_after_answer(
        self,
        account_id: uuid.UUID | None,
        client: common_pb2.ClientContext,
        *,
        expired_password: bool,
    ) -> None:
        """Queue a failed sign-in for ``process_failed_sign_in`` in the outbox, as a reset
        request is: one write before the answer, the same for a known identifier and an
        unknown one, and the counting after it. Once the answer is given the attempt is
        stored, so neither a restart nor a stuffing run's volume loses it."""
        failure = FailedSignIn(
            account_id=account_id,
            ip_address=client.ip_address,
            device_id=client.device_id,
            user_agent=client.user_agent,
            expired_password=expired_password,
        )
        await self.sign_in_store.queue_failed_sign_in(failure)

    async def process_failed_sign_in(self, message: OutboxMessage) -> None:
        """Count a queued failed sign-in against its account, if it named one."""
        failure = FailedSignIn.from_payload(message.payload)
        if failure.account_id is None:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            # Delivered at least once: a redelivery must not count the failure twice.
            if not await remember_once(conn, message.idempotency_key):
                return
            if failure.expired_password:
                await self._expired_password_used(
                    conn, failure.account_id, failure, at=message.created_at
                )
                return
            await account_store.record_failure(conn, failure.account_id)
            await log_store.log_event(
                conn,
                account_id=failure.account_id,
                kind="login.password_failed",
                ip=failure.ip_address,
                device_id=failure.device_id,
            )

    async def _expired_password_used(
        self,
        conn: asyncpg.Connection,
        account_id: uuid.UUID,
        failure: FailedSignIn,
        *,
        at: datetime,
    ) -> None:
        """A forced reset expired this password, yet someone has it. The answer was a wrong
        password's, so a stuffing run cannot learn which leaked pairs were right; the
        owner is told at the registered address (at most once an hour)."""
        await log_store.log_event(
            conn,
            account_id=account_id,
            kind="login.expired_password_used",
            ip=failure.ip_address,
            device_id=failure.device_id,
        )
        await send_event_notice(
            conn,
            account_id=account_id,
            kind=Kind.NOTICE_KIND_SECOND_FACTOR_FAILED,
            occurred_at=at,
            detail="sign-in attempted with the expired password; choose a new one",
            ip_address=failure.ip_address,
            device=failure.user_agent,
            key=f"identity:expired-password-used:{account_id}:{at:%Y%m%d%H}",
        )

    async def begin_passkey_login(
        self,
        *,
        identifier: str,
        challenge_id: uuid.UUID | None,
        client: common_pb2.ClientContext,
        device_proof: str = "",
    ) -> tuple[uuid.UUID, str]:
        self._refuse_blocked(client)
        proven = await self._proven(
            device_proof, "BeginPasskeyLogin", str(challenge_id) if challenge_id else ""
        )
        client = as_seen(client, proven)
        webauthn_challenge = webauthn.helpers.generate_challenge()
        async with self.pool.acquire() as conn, conn.transaction():
            if challenge_id is not None:
                challenge = await challenge_store.open_challenge(conn, challenge_id)
                if (
                    challenge is None
                    or cred.PASSKEY not in challenge["methods"]
                    or challenge["device_id"] != client.device_id
                ):
                    raise invalid_credentials()
                await challenge_store.set_challenge_webauthn(conn, challenge_id, webauthn_challenge)
                allow = await self._passkey_ids(conn, challenge["account_id"])
                return challenge_id, self._authentication_options(webauthn_challenge, allow)
            # Usernameless even when an identifier is given: listing its credentials would
            # tell anyone whether the account exists.
            ceremony_id = await challenge_store.create_ceremony(
                conn,
                purpose="login",
                account_id=None,
                session_id=None,
                device_id=client.device_id,
                webauthn_challenge=webauthn_challenge,
                lifetime=CHALLENGE_LIFETIME,
            )
        return ceremony_id, self._authentication_options(webauthn_challenge)

    async def finish_passkey_login(
        self,
        *,
        ceremony_id: uuid.UUID,
        assertion_json: str,
        client: common_pb2.ClientContext,
        device_proof: str = "",
    ) -> IssuedSession:
        self._refuse_blocked(client)
        proven = await self._proven(device_proof, "FinishPasskeyLogin", str(ceremony_id))
        client = as_seen(client, proven)
        async with self.pool.acquire() as conn, conn.transaction():
            ceremony = await challenge_store.take_ceremony(conn, ceremony_id, "login")
            if ceremony is None or ceremony["device_id"] != client.device_id:
                raise invalid_credentials()
            factor = await self._check_assertion(
                conn, assertion_json, bytes(ceremony["webauthn_challenge"]), account_id=None
            )
        if factor is None:
            raise invalid_credentials()
        account_id = factor.account_id
        known = (
            proven is not None
            and await device_store.device(self.pool, account_id, proven.thumbprint) is not None
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
            account = await account_store.account(conn, account_id)
            if account is None or account["status"] != "active":
                raise invalid_credentials()
            await self._remember_and_tell(
                conn, account_id, proven, client, country=assessment.country_code
            )
            # A sign-in ends a run of failed passwords, the cap's count among them.
            await account_store.clear_failures(conn, account_id)
            issued = await self._open_session(
                conn, account_id=account_id, client=client, methods=[cred.PASSKEY], proven=proven
            )
        self._signed_in(assessment.decision_id, account_id, issued, client)
        return issued
