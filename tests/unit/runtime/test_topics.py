"""The one outbox router: each topic's protobuf payload to its handler, and an
unknown topic refused so the relay keeps the message."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from mamoru.notify.v1 import notify_pb2

from services.runtime.outbox import OutboxMessage
from services.runtime.topics import OutboxRouter, Topic, UnknownTopic

ALERT = Topic("notify.send_operator_alert", notify_pb2.SendOperatorAlertRequest)
WEBHOOK = Topic("webhook", Struct)


def envelope(topic: str, payload: dict[str, object]) -> OutboxMessage:
    return OutboxMessage(
        id=7,
        topic=topic,
        idempotency_key="key-7",
        payload=payload,
        attempts=1,
        created_at=datetime.now(UTC),
    )


async def test_a_message_reaches_its_topics_handler_parsed_into_the_topics_type() -> None:
    heard: list[tuple[object, str]] = []

    async def alert(request: notify_pb2.SendOperatorAlertRequest, message: OutboxMessage) -> None:
        heard.append((request, message.idempotency_key))

    async def webhook(ref: Struct, message: OutboxMessage) -> None:
        heard.append((ref["delivery_id"], message.idempotency_key))

    router = OutboxRouter().on(ALERT, alert).on(WEBHOOK, webhook)
    request = notify_pb2.SendOperatorAlertRequest(
        alert_id="a-1", severity=notify_pb2.SEVERITY_CRITICAL, summary="s", idempotency_key="k"
    )
    # The payload as Topic.enqueue stores it: the proto's JSON with its field names.
    await router(
        envelope(ALERT.name, json_format.MessageToDict(request, preserving_proto_field_name=True))
    )
    await router(envelope(WEBHOOK.name, {"delivery_id": "d-1"}))

    assert heard == [(request, "key-7"), ("d-1", "key-7")]
    assert router.topics == {ALERT.name, WEBHOOK.name}


async def test_a_topic_without_a_handler_is_refused_so_the_relay_retries_it() -> None:
    with pytest.raises(UnknownTopic, match=r"no handler for topic 'wallet\.payout'"):
        await OutboxRouter()(envelope("wallet.payout", {}))


async def test_a_payload_that_is_not_the_topics_message_is_refused() -> None:
    async def alert(request: notify_pb2.SendOperatorAlertRequest, message: OutboxMessage) -> None:
        raise AssertionError("must not be called")

    with pytest.raises(json_format.ParseError):
        await OutboxRouter().on(ALERT, alert)(envelope(ALERT.name, {"amount": 5}))


def test_a_topic_has_one_handler() -> None:
    async def handler(ref: Struct, message: OutboxMessage) -> None:
        return None

    router = OutboxRouter().on(WEBHOOK, handler)
    with pytest.raises(ValueError, match="already has a handler"):
        router.on(WEBHOOK, handler)
