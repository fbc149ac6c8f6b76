"""Handlers: profile, contacts and closing the account."""

from __future__ import annotations

from datetime import date
from typing import Any

from mamoru.identity.v1 import identity_pb2 as pb

from services.identity.api.base import Handlers
from services.identity.api.convert import (
    CLEARABLE,
    PROFILE_TEXT,
    Context,
    bearer,
    caller_claims,
    contact_message,
    profile_message,
    refuse_blank,
    uuid_of,
)
from services.runtime.validation import Violations


class ContactRpcs(Handlers):
    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Context
    ) -> pb.GetProfileResponse:
        return pb.GetProfileResponse(
            profile=profile_message(await self.identity.profile(caller_claims()))
        )

    async def UpdateProfile(
        self, request: pb.UpdateProfileRequest, context: Context
    ) -> pb.UpdateProfileResponse:
        check = Violations()
        changes: dict[str, Any] = {}
        for field in PROFILE_TEXT:
            if request.HasField(field):  # type: ignore[arg-type]
                changes[field] = getattr(request, field)
        if request.HasField("birth_date"):
            try:
                changes["birth_date"] = date.fromisoformat(request.birth_date)
                check.require(len(request.birth_date) == 10, "birth_date", "must be YYYY-MM-DD")
            except ValueError:
                check.add("birth_date", "must be a date as YYYY-MM-DD")
        if request.language:
            changes["language"] = request.language
        for index, name in enumerate(request.clear_fields):
            if name not in CLEARABLE:
                check.add(
                    f"clear_fields[{index}]", f"must be one of {', '.join(sorted(CLEARABLE))}"
                )
            elif name in changes:
                check.add(f"clear_fields[{index}]", "cannot clear a field that is also set")
            else:
                changes[name] = None
        check.raise_if_any()
        row = await self.identity.update_profile(caller_claims(), changes)
        return pb.UpdateProfileResponse(profile=profile_message(row))

    async def ListContacts(
        self, request: pb.ListContactsRequest, context: Context
    ) -> pb.ListContactsResponse:
        rows = await self.identity.list_contacts(caller_claims())
        return pb.ListContactsResponse(contacts=[contact_message(row) for row in rows])

    async def AddContact(
        self, request: pb.AddContactRequest, context: Context
    ) -> pb.AddContactResponse:
        check = Violations()
        if request.kind == pb.CONTACT_KIND_EMAIL:
            check.email("address", request.address)
        elif request.kind == pb.CONTACT_KIND_PHONE:
            check.require(
                request.address.startswith("+")
                and request.address[1:].isdigit()
                and 8 <= len(request.address) <= 16,
                "address",
                "must be a phone number in E.164 form (+81...)",
            )
        elif request.kind == pb.CONTACT_KIND_PUSH:
            check.text("address", request.address, max_length=4096, required=True, single_line=True)
        check.raise_if_any()
        row = await self.identity.add_contact(
            caller_claims(),
            kind=request.kind,
            address=request.address,
            make_primary=request.make_primary,
            access_token=bearer(context),
            device_proof=request.device_proof,
        )
        return pb.AddContactResponse(contact=contact_message(row))

    async def VerifyContact(
        self, request: pb.VerifyContactRequest, context: Context
    ) -> pb.VerifyContactResponse:
        check = Violations()
        refuse_blank(check, code=request.code)
        check.raise_if_any()
        contact_id = uuid_of(request.contact_id)
        row = await self.identity.verify_contact(
            caller_claims(), contact_id=contact_id, code=request.code
        )
        return pb.VerifyContactResponse(contact=contact_message(row))

    async def RemoveContact(
        self, request: pb.RemoveContactRequest, context: Context
    ) -> pb.RemoveContactResponse:
        contact_id = uuid_of(request.contact_id)
        await self.identity.remove_contact(caller_claims(), contact_id)
        return pb.RemoveContactResponse()

    async def FreezeContactChange(
        self, request: pb.FreezeContactChangeRequest, context: Context
    ) -> pb.FreezeContactChangeResponse:
        check = Violations()
        refuse_blank(check, freeze_token=request.freeze_token)
        check.raise_if_any()
        await self.identity.freeze_contact_change(request.freeze_token)
        return pb.FreezeContactChangeResponse()

    async def CloseAccount(
        self, request: pb.CloseAccountRequest, context: Context
    ) -> pb.CloseAccountResponse:
        await self.identity.close_account(caller_claims(), request.reason)
        return pb.CloseAccountResponse()
