"""Handlers for other services and operators: keys, revocations, contacts, locks, resets,
the security log."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import (
    Context,
    contact_message,
    refuse_blank,
    security_event_message,
    security_log_after,
    security_log_token,
    uuid_of,
    uuid_or_none,
)
from services.runtime.access import current_caller
from services.runtime.convert import timestamp
from services.runtime.validation import Violations


class OperatorRpcs(Handlers):
    async def GetJwks(self, request: pb.GetJwksRequest, context: Context) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(jwks_json=json.dumps(self.identity.keys.jwks()))

    async def WatchRevocations(
        self, request: pb.WatchRevocationsRequest, context: Context
    ) -> AsyncIterator[pb.WatchRevocationsResponse]:
        # Headers at once: a follower counts itself subscribed when they arrive.
        await context.send_initial_metadata(())
        async for sequence, session_id, expires_at in self.feed.stream(
            request.after_sequence, self.stopping
        ):
            yield pb.WatchRevocationsResponse(
                sequence=sequence,
                session_id=session_id,
                expires_at=timestamp(expires_at),  # type: ignore[arg-type]
            )

    async def GetRegisteredContacts(
        self, request: pb.GetRegisteredContactsRequest, context: Context
    ) -> pb.GetRegisteredContactsResponse:
        subject = request.WhichOneof("subject")
        account_id = uuid_of(request.account_id) if subject == "account_id" else None
        payer_id = uuid_of(request.payer_id) if subject == "payer_id" else None
        pending = uuid_or_none(request.pending_contact_id)
        account, contacts = await self.identity.registered_contacts(
            account_id=account_id, payer_id=payer_id, pending_contact_id=pending
        )
        response = pb.GetRegisteredContactsResponse(
            account_id=str(account["id"]),
            contacts=[contact_message(row) for row in contacts],
            language=account["language"],
        )
        if account["display_name"] is not None:
            response.display_name = account["display_name"]
        return response

    async def ForceCredentialReset(
        self, request: pb.ForceCredentialResetRequest, context: Context
    ) -> AsyncIterator[pb.ForceCredentialResetResponse]:
        check = Violations()
        refuse_blank(check, reason=request.reason)
        resume = uuid_or_none(request.resume_job_id)
        account_ids = [uuid_of(raw) for raw in request.account_ids]
        if resume is None:
            check.require(
                request.all_accounts != bool(account_ids),
                "account_ids",
                "give account IDs or all_accounts, not both and not neither",
            )
        check.raise_if_any()
        async for progress in self.identity.force_credential_reset(
            account_ids=account_ids,
            all_accounts=request.all_accounts,
            reason=request.reason,
            resume_job_id=resume,
            actor=current_caller(),
            stop=self.stopping,
        ):
            yield pb.ForceCredentialResetResponse(
                job_id=str(progress.job_id),
                processed=progress.processed,
                total=progress.total,
                done=progress.done,
            )

    async def LockAccount(
        self, request: pb.LockAccountRequest, context: Context
    ) -> pb.LockAccountResponse:
        account_id = operator_target(request.account_id, request.reason)
        await self.identity.set_locked(
            account_id, locked=True, reason=request.reason, actor=f"operator:{current_caller()}"
        )
        return pb.LockAccountResponse()

    async def UnlockAccount(
        self, request: pb.UnlockAccountRequest, context: Context
    ) -> pb.UnlockAccountResponse:
        account_id = operator_target(request.account_id, request.reason)
        await self.identity.set_locked(
            account_id, locked=False, reason=request.reason, actor=f"operator:{current_caller()}"
        )
        return pb.UnlockAccountResponse()

    async def GetSecurityLog(
        self, request: pb.GetSecurityLogRequest, context: Context
    ) -> pb.GetSecurityLogResponse:
        check = Violations()
        # The contract bounds the token's length; a control character in it is refused here.
        check.text("page.page_token", request.page.page_token, max_length=512, single_line=True)
        check.raise_if_any()
        account_id = uuid_of(request.account_id)
        size = request.page.page_size or 50
        after = security_log_after(request.page.page_token)
        rows, last = await self.identity.security_log(account_id, page_size=size, after=after)
        return pb.GetSecurityLogResponse(
            events=[security_event_message(row) for row in rows],
            next_page_token=security_log_token(last),
        )


def operator_target(account_id: str, reason: str) -> uuid.UUID:
    """The account an operator's lock or unlock names, with a reason that is not blank."""
    check = Violations()
    refuse_blank(check, reason=reason)
    check.raise_if_any()
    return uuid_of(account_id)
