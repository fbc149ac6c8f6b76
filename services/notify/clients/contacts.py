"""Where notify learns an account's verified contacts: identity's GetRegisteredContacts.

The delivery use case depends on the ``ContactDirectory`` port only; this
identity adapter is the production implementation.
"""

from __future__ import annotations

import grpc
from mamoru.identity.v1 import identity_pb2, identity_pb2_grpc

from services.notify.domain.kinds import Channel
from services.notify.domain.routing import (
    ContactAddress,
    Language,
    Recipient,
    RegisteredContacts,
)
from services.notify.use_cases.ports import AccountUnknown, DirectoryUnavailable

_CHANNELS = {
    identity_pb2.CONTACT_KIND_EMAIL: Channel.EMAIL,
    identity_pb2.CONTACT_KIND_PHONE: Channel.SMS,
    identity_pb2.CONTACT_KIND_PUSH: Channel.PUSH,
}


class IdentityContactDirectory:
    """Asks identity over mTLS at send time."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_seconds: float = 5.0) -> None:
        self._stub = identity_pb2_grpc.IdentityServiceStub(channel)
        self._timeout = timeout_seconds

    async def registered_contacts(
        self, recipient: Recipient, *, pending_contact_id: str | None = None
    ) -> RegisteredContacts:
        request = identity_pb2.GetRegisteredContactsRequest(
            pending_contact_id=pending_contact_id or ""
        )
        if recipient.account_id:
            request.account_id = recipient.account_id
        else:
            request.payer_id = recipient.payer_id or ""
        try:
            reply = await self._stub.GetRegisteredContacts(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise AccountUnknown("identity knows no such account") from None
            raise DirectoryUnavailable(
                f"GetRegisteredContacts: {error.code().name}: {error.details()}"
            ) from None
        return RegisteredContacts(
            account_id=reply.account_id,
            contacts=tuple(
                ContactAddress(
                    contact_id=contact.contact_id,
                    channel=_CHANNELS[contact.kind],
                    address=contact.address,
                    verified=contact.verified,
                    primary=contact.primary,
                )
                for contact in reply.contacts
                if contact.kind in _CHANNELS
            ),
            language=Language.EN if reply.language == identity_pb2.LANGUAGE_EN else Language.JA,
            display_name=reply.display_name if reply.HasField("display_name") else None,
        )
