"""The contract itself: no notify RPC lets a caller say where a notice goes."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from mamoru.notify.v1 import notify_pb2

SERVICE = notify_pb2.DESCRIPTOR.services_by_name["NotifyService"]
# Words that would name a destination. SecurityEventParams.ip_address describes
# where a sign-in came from, not where the notice goes.
DESTINATION_WORDS = {"address", "email", "phone", "destination", "to", "msisdn", "device_token"}
EVENT_FACTS = {"mamoru.notify.v1.SecurityEventParams.ip_address"}


def fields_of(message: Descriptor, seen: set[str] | None = None) -> list[FieldDescriptor]:
    seen = set() if seen is None else seen
    if message.full_name in seen:
        return []
    seen.add(message.full_name)
    found = []
    for field in message.fields:
        found.append(field)
        if field.message_type is not None:
            found += fields_of(field.message_type, seen)
    return found


def test_no_rpc_request_accepts_a_destination() -> None:
    named = [
        field.full_name
        for method in SERVICE.methods
        for field in fields_of(method.input_type)
        if field.full_name not in EVENT_FACTS
        and (DESTINATION_WORDS & set(field.name.split("_")) or "device_token" in field.name)
    ]
    assert named == []


def test_a_notice_is_addressed_by_account_or_payer_id_only() -> None:
    request = notify_pb2.SendNoticeRequest.DESCRIPTOR
    recipient = request.oneofs_by_name["recipient"]
    assert [field.name for field in recipient.fields] == ["account_id", "payer_id"]
    assert set(request.fields_by_name) == {
        "account_id",
        "payer_id",
        "kind",
        "code",
        "security_event",
        "money",
        "news",
        "idempotency_key",
    }
