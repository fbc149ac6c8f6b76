"""Identity's outbox topics keep the payloads they always stored, so rows written
before the topics were typed deliver through the router like new ones."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest_asyncio
from google.protobuf import json_format
from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.identity.clients import notices
from services.identity.domain.login import FailedSignIn
from services.runtime.outbox import OutboxMessage, OutboxRelay, enqueue

PAYER = uuid.UUID("6f1c3a52-0000-4000-8000-000000000001")
ACCOUNT = uuid.UUID("6f1c3a52-0000-4000-8000-000000000002")


class Peers(notify_pb2_grpc.NotifyServiceServicer, wallet_pb2_grpc.WalletServiceServicer):
    """Notify and wallet at the far end of identity's channels, recording what arrives."""

    def __init__(self) -> None:
        self.notices: list[notify_pb2.SendNoticeRequest] = []
        self.closures: list[wallet_pb2.CloseWalletRequest] = []

    async def SendNotice(self, request, context):
        self.notices.append(request)
        return notify_pb2.SendNoticeResponse(notice_id="n-1")

    async def CloseWallet(self, request, context):
        self.closures.append(request)
        return wallet_pb2.CloseWalletResponse()


@pytest_asyncio.fixture
async def peers() -> AsyncIterator[tuple[Peers, grpc.aio.Channel]]:
    # Only the two RPCs identity calls are answered; the generated bases are abstract to mypy.
    received = Peers()  # type: ignore[abstract]
    server = grpc.aio.server()
    notify_pb2_grpc.add_NotifyServiceServicer_to_server(received, server)
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(received, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield received, channel
    finally:
        await channel.close()
        await server.stop(None)


async def stored(pool) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch("select idempotency_key, payload from outbox")
    return {row["idempotency_key"]: row["payload"] for row in rows}


FAILURE = FailedSignIn(
    account_id=None, ip_address="192.0.2.7", device_id="", user_agent="ua", expired_password=True
)


async def test_each_topic_stores_the_payload_it_stored_before_topics_were_typed(pool):
    reset = {"identifier_key": "k", "ip_address": "192.0.2.7", "device_id": "", "user_agent": ""}
    async with pool.acquire() as conn, conn.transaction():
        await notices.send_code_notice(
            conn, account_id=ACCOUNT, kind=notices.Kind.NOTICE_KIND_PASSWORD_RESET, secret="s",
            expires_at=datetime(2030, 1, 1, tzinfo=UTC), key="typed-notice",
        )  # fmt: skip
        await notices.close_wallet(conn, payer_id=PAYER)
        await notices.RESET_REQUEST.enqueue(conn, notices.struct(reset), idempotency_key="typed-r")
        await notices.FAILED_SIGN_IN.enqueue(
            conn, notices.struct(FAILURE.payload()), idempotency_key="typed-f"
        )
    typed = await stored(pool)
    await pool.execute("truncate outbox")
    params = notify_pb2.CodeParams(secret="s")
    params.expires_at.FromDatetime(datetime(2030, 1, 1, tzinfo=UTC))
    request = notify_pb2.SendNoticeRequest(
        account_id=str(ACCOUNT), kind=notices.Kind.NOTICE_KIND_PASSWORD_RESET, code=params,
        idempotency_key="typed-notice",
    )  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        for key, topic, payload in [
            ("typed-notice", notices.NOTICE.name,
             json_format.MessageToDict(request, preserving_proto_field_name=True)),
            (f"identity:close-wallet:{PAYER}", notices.CLOSE_WALLET.name,
             {"payer_id": str(PAYER)}),
            ("typed-r", notices.RESET_REQUEST.name, reset),
            ("typed-f", notices.FAILED_SIGN_IN.name, FAILURE.payload()),
        ]:  # fmt: skip
            scrub = [notices.CODE_SECRET] if topic == notices.NOTICE.name else []
            await enqueue(conn, topic=topic, idempotency_key=key, payload=payload, scrub=scrub)
    assert await stored(pool) == typed


async def test_rows_stored_before_topics_were_typed_still_deliver(pool, peers):
    received, channel = peers
    local: list[tuple[str, dict[str, Any]]] = []

    async def reset_request(message: OutboxMessage) -> None:
        local.append((message.topic, message.payload))

    async def failed_sign_in(message: OutboxMessage) -> None:
        local.append((message.topic, message.payload))

    reset = {"identifier_key": "k", "ip_address": "192.0.2.7", "device_id": "", "user_agent": ""}
    notice = {
        "account_id": str(ACCOUNT), "kind": "NOTICE_KIND_NEW_DEVICE_SIGN_IN",
        "security_event": {"ip_address": "192.0.2.7", "occurred_at": "2030-01-01T00:00:00Z"},
        "idempotency_key": "old-notice",
    }  # fmt: skip
    rows: list[tuple[str, str, dict[str, Any]]] = [
        ("old-notice", "notify.send_notice", notice),
        ("old-close", "wallet.close_wallet", {"payer_id": str(PAYER)}),
        ("old-reset", "identity.reset_requested", reset),
        ("old-failed", "identity.sign_in_failed", FAILURE.payload()),
    ]
    async with pool.acquire() as conn, conn.transaction():
        for key, topic, payload in rows:
            await enqueue(conn, topic=topic, idempotency_key=key, payload=payload)
    router = notices.outbox_router(
        channel, channel, reset_request=reset_request, failed_sign_in=failed_sign_in
    )
    assert await OutboxRelay(pool, router).deliver_due() == 4
    assert await pool.fetchval("select count(*) from outbox where state = 'delivered'") == 4
    assert [n.idempotency_key for n in received.notices] == ["old-notice"]
    assert received.notices[0].security_event.ip_address == "192.0.2.7"
    assert received.closures == [wallet_pb2.CloseWalletRequest(payer_id=str(PAYER))]
    assert sorted(local) == [
        ("identity.reset_requested", reset),
        ("identity.sign_in_failed", FAILURE.payload()),
    ]
