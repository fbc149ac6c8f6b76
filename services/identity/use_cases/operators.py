"""What operators and other services ask of identity: locks, forced resets, the
security log, the contacts notify delivers to.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from services.identity.clients.notices import (
    Kind,
    send_event_notice,
)
from services.identity.domain.listings import SecurityEvent
from services.identity.domain.sessions import (
    RESET_LIFETIME,
)
from services.identity.storage import accounts as account_store
from services.identity.storage import contacts as contact_store
from services.identity.storage import resets as reset_store
from services.identity.storage import security_log as log_store
from services.identity.storage import sessions as session_store
from services.identity.use_cases.base import (
    IdentityBase,
)
from services.runtime.errors import (
    NotFound,
)
from services.runtime.outbox import NOTIFY_CHANNEL as OUTBOX_CHANNEL


class ResetProgress:
    """Progress of a forced credential reset job."""

    def __init__(self, job: Any) -> None:
        self.job_id: uuid.UUID = job["id"]
        self.processed: int = job["processed"]
        self.total: int = job["total"]
        self.done: bool = job["finished_at"] is not None


class Operators(IdentityBase):
    async def set_locked(
        self, account_id: uuid.UUID, *, locked: bool, reason: str, actor: str
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            account = await account_store.account_for_update(conn, account_id)
            if account is None or account["status"] in ("closed", "pending"):
                raise NotFound("ACCOUNT_NOT_FOUND", "no such open account")
            await account_store.set_status(conn, account_id, "locked" if locked else "active")
            if locked:
                await session_store.end_begun_with_old_credentials(conn, account_id, keep=None)
                await session_store.revoke_sessions(
                    conn,
                    account_id=account_id,
                    reason="account locked",
                    token_lifetime=self.revocation_lifetime,
                )
            await log_store.log_event(
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
                occurred_at=self.now(),
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
                job = await reset_store.reset_job(conn, resume_job_id)
                if job is None:
                    raise NotFound("JOB_NOT_FOUND", "no such forced reset job")
            else:
                job = await reset_store.create_reset_job(
                    conn,
                    reason=reason,
                    all_accounts=all_accounts,
                    account_ids=account_ids,
                    created_by=actor,
                )
        yield ResetProgress(job)
        while job["finished_at"] is None and not stop.is_set():
            async with self.pool.acquire() as conn, conn.transaction():
                job = await reset_store.run_reset_batch(
                    conn,
                    job,
                    batch_size=self.settings.forced_reset_batch,
                    token_lifetime=self.revocation_lifetime,
                    link_lifetime=RESET_LIFETIME,
                    notify_channel=OUTBOX_CHANNEL,
                )
            yield ResetProgress(job)

    async def security_log(
        self,
        account_id: uuid.UUID,
        *,
        page_size: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> tuple[list[SecurityEvent], tuple[datetime, uuid.UUID] | None]:
        """A page of the account's security log, newest first, and where the next starts."""
        async with self.pool.acquire() as conn:
            if await account_store.account(conn, account_id) is None:
                raise NotFound("ACCOUNT_NOT_FOUND", "no such account")
            rows = await log_store.security_events(
                conn, account_id, before=after, limit=page_size + 1
            )
        if len(rows) <= page_size:
            return rows, None
        rows = rows[:page_size]
        return rows, rows[-1].position

    async def registered_contacts(
        self,
        *,
        account_id: uuid.UUID | None,
        payer_id: uuid.UUID | None,
        pending_contact_id: uuid.UUID | None,
    ) -> tuple[Any, list[Any]]:
        async with self.pool.acquire() as conn:
            if account_id is not None:
                account = await account_store.account(conn, account_id)
            else:
                assert payer_id is not None
                account = await account_store.account_by_payer(conn, payer_id)
            if account is None:
                raise NotFound("ACCOUNT_NOT_FOUND", "no such account")
            contacts = list(await contact_store.contacts(conn, account["id"], verified_only=True))
            if pending_contact_id is not None:
                pending = await contact_store.contact(conn, pending_contact_id)
                if pending is None or pending["account_id"] != account["id"]:
                    raise NotFound("CONTACT_NOT_FOUND", "no such pending contact")
                # A code notice delivered late, after the address was verified, still
                # finds its contact (already among the verified ones).
                if not pending["verified"]:
                    contacts.append(pending)
        return account, contacts
