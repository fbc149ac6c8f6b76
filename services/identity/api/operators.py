"""Handlers for other services and operators: keys, revocations, contacts, locks, resets,
the security log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import (
    Context,
    contact_message,
    operator_target,
    required_uuid,
    security_event_message,
    security_log_after,
    security_log_token,
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
        check = Violations()
        check.require(request.after_sequence >= 0, "after_sequence", "must not be negative")
        check.raise_if_any()
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
        check = Violations()
        subject = request.WhichOneof("subject")
        account_id = payer_id = None
        if subject == "account_id":
            account_id = check.uuid("account_id", request.account_id)
        elif subject == "payer_id":
            payer_id = check.uuid("payer_id", request.payer_id)
        else:
            check.add("subject", "account_id or payer_id is required")
        pending = check.uuid("pending_contact_id", request.pending_contact_id, required=False)
        check.raise_if_any()
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
        check.text("reason", request.reason, max_length=1000, required=True)
        resume = check.uuid("resume_job_id", request.resume_job_id, required=False)
        account_ids = []
        for index, raw in enumerate(request.account_ids):
            parsed = check.uuid(f"account_ids[{index}]", raw)
            if parsed is not None:
                account_ids.append(parsed)
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
        account_id = required_uuid(check, "account_id", request.account_id)
        size = request.page.page_size or 50
        check.require(0 < size <= 500, "page.page_size", "must be between 0 and 500")
        check.text("page.page_token", request.page.page_token, max_length=512, single_line=True)
        check.raise_if_any()
        after = security_log_after(request.page.page_token)
        rows, last = await self.identity.security_log(account_id, page_size=size, after=after)
        return pb.GetSecurityLogResponse(
            events=[security_event_message(row) for row in rows],
            next_page_token=security_log_token(last),
        )
