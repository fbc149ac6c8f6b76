"""Where notify learns an account's verified contacts: identity's GetRegisteredContacts,
and identity's WatchContactChanges, which says when what was learnt is stale.

The delivery use case depends on the ``ContactDirectory`` port only; this
identity adapter is the production implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from mamoru.identity.v1 import identity_pb2, identity_pb2_grpc
from prometheus_client import Counter, Gauge

from services.notify.domain.kinds import Channel
from services.notify.domain.routing import (
    ContactAddress,
    Language,
    Recipient,
    RegisteredContacts,
)
from services.notify.use_cases.contacts import StreamOpening
from services.notify.use_cases.ports import AccountUnknown, DirectoryUnavailable
from services.runtime.metrics import registry
from services.runtime.peers import Follower

CONTACT_CHANGES_HEARD = Counter(
    "mamoru_notify_contact_changes_heard",
    "Accounts identity announced a contact change of (WatchContactChanges)",
    registry=registry("notify"),
)
KEPT_CONTACTS = Gauge(
    "mamoru_notify_kept_contacts",
    "Accounts whose contacts notify keeps from an earlier look-up",
    registry=registry("notify"),
)

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


def follow_contact_changes(
    channel: grpc.aio.Channel, forget: Callable[[Sequence[str]], None]
) -> Follower:
    """Background job: hand every account identity announces to ``forget``."""
    stub = identity_pb2_grpc.IdentityServiceStub(channel)

    async def apply(item: identity_pb2.WatchContactChangesResponse) -> None:
        forget(item.account_ids)
        CONTACT_CHANGES_HEARD.inc(len(item.account_ids))

    def subscribe() -> object:
        return stub.WatchContactChanges(
            identity_pb2.WatchContactChangesRequest(), wait_for_ready=True
        )

    return Follower("contact_changes", "identity", subscribe, apply)


def stream_opening(follower: Follower) -> StreamOpening:
    """Which subscription of ``follower`` is open now; None while it has none."""
    return lambda: follower.subscribed_at if follower.subscribed else None
