"""The second factor a sign-in challenge asks for: sending the email code, checking the answer."""

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
from services.identity.domain.errors import invalid_credentials
from services.identity.domain.login import (
    CHALLENGE_ATTEMPTS,
)
from services.identity.domain.sealing import (
    new_code,
)
from services.identity.domain.sessions import (
    CODE_LIFETIME,
    IssuedSession,
)
from services.identity.storage import accounts as account_store
from services.identity.storage import challenges as challenge_store
from services.identity.storage import security_log as log_store
from services.identity.use_cases.base import (
    as_seen,
)
from services.identity.use_cases.checks import FactorChecks


class SecondFactor(FactorChecks):
    async def send_sign_in_code(self, challenge_id: uuid.UUID) -> datetime:
        code = new_code()
        expires_at = self.now() + CODE_LIFETIME
        async with self.pool.acquire() as conn, conn.transaction():
            challenge = await challenge_store.open_challenge(conn, challenge_id)
            if challenge is None or cred.EMAIL_CODE not in challenge["methods"]:
                raise invalid_credentials()
            await challenge_store.set_challenge_email_code(
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
            challenge = await challenge_store.open_challenge(conn, challenge_id)
            if (
                challenge is None
                or challenge["purpose"] != "login"
                or challenge["device_id"] != client.device_id
            ):
                raise invalid_credentials()
            account_id = challenge["account_id"]
            method = await self._check_factor(conn, challenge, answer, value)
            if method is None:
                await challenge_store.fail_challenge(conn, challenge_id, CHALLENGE_ATTEMPTS)
                await log_store.log_event(
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
                    occurred_at=self.now(),
                    ip_address=client.ip_address,
                    device=client.user_agent,
                    key=f"identity:second-factor-failed:{challenge_id}",
                )
            else:
                await challenge_store.complete_challenge(conn, challenge_id)
                await account_store.clear_failures(conn, account_id)
                # The key becomes a known device only now, after the second factor.
                new_device = await self._remember_and_tell(
                    conn, account_id, proven, client, country=""
                )
                if new_device:
                    await log_store.log_event(
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
        self._signed_in(challenge["risk_decision_id"], account_id, issued, client)
        return issued
