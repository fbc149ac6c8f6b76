"""What a password sign-in reads and writes before its answer, over the pool.

SQL only (through the accounts module and the outbox); the use case's ``SignInStore`` port.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.identity.clients.notices import FAILED_SIGN_IN, struct
from services.identity.domain.login import FailedSignIn
from services.identity.storage import Record
from services.identity.storage import accounts as account_store
from services.runtime.device_proof import ProvenDevice


class PgSignInStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def login_candidate(self, login_key: str, proven: ProvenDevice | None) -> Record | None:
        return await account_store.login_candidate(self._pool, login_key, proven)

    async def queue_failed_sign_in(self, failure: FailedSignIn) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await FAILED_SIGN_IN.enqueue(
                conn,
                struct(failure.payload()),
                idempotency_key=f"identity:sign-in-failed:{uuid.uuid4()}",
                # Once counted, the row keeps no trace of who tried what from where:
                # whether an identifier named an account is not left for a reader.
                scrub=[("account_id",), ("ip_address",), ("device_id",), ("user_agent",)],
            )
