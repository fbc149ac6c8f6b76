"""Messages identity sends through the outbox: notices to notify, closures to wallet.

A notice names only the account; notify resolves the address from identity's
verified contacts at send time, so nothing a requester types can steer it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import grpc
from google.protobuf import json_format
from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.runtime.outbox import OutboxMessage, enqueue

NOTICE_TOPIC = "notify.send_notice"
CLOSE_WALLET_TOPIC = "wallet.close_wallet"
# A password reset request, handled by identity itself after the answer was given.
RESET_REQUEST_TOPIC = "identity.reset_requested"
# A wrong or expired password, counted by identity itself after the answer was given.
FAILED_SIGN_IN_TOPIC = "identity.sign_in_failed"

Kind = notify_pb2.NoticeKind
# Where a code notice carries its code or link: blanked once notify has it.
CODE_SECRET = ("code", "secret")


async def send_code_notice(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    kind: notify_pb2.NoticeKind.ValueType,
    secret: str,
    expires_at: datetime,
    pending_contact_id: uuid.UUID | None = None,
    key: str,
) -> None:
    params = notify_pb2.CodeParams(secret=secret, pending_contact_id=str(pending_contact_id or ""))
    params.expires_at.FromDatetime(expires_at)
    request = notify_pb2.SendNoticeRequest(
        account_id=str(account_id), kind=kind, code=params, idempotency_key=key
    )
    await _enqueue_notice(conn, request, scrub=[CODE_SECRET])


async def send_event_notice(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    kind: notify_pb2.NoticeKind.ValueType,
    occurred_at: datetime,
    detail: str = "",
    ip_address: str = "",
    device: str = "",
    freeze_token: str = "",
    key: str | None = None,
) -> None:
    params = notify_pb2.SecurityEventParams(
        ip_address=ip_address, device=device[:200], detail=detail[:200], freeze_token=freeze_token
    )
    params.occurred_at.FromDatetime(occurred_at)
    request = notify_pb2.SendNoticeRequest(
        account_id=str(account_id),
        kind=kind,
        security_event=params,
        idempotency_key=key or f"identity:{uuid.uuid4()}",
    )
    await _enqueue_notice(conn, request)


async def close_wallet(conn: asyncpg.Connection, *, payer_id: uuid.UUID) -> None:
    await enqueue(
        conn,
        topic=CLOSE_WALLET_TOPIC,
        idempotency_key=f"identity:close-wallet:{payer_id}",
        payload={"payer_id": str(payer_id)},
    )


async def _enqueue_notice(
    conn: asyncpg.Connection,
    request: notify_pb2.SendNoticeRequest,
    scrub: Sequence[Sequence[str]] = (),
) -> None:
    payload: dict[str, Any] = json_format.MessageToDict(request, preserving_proto_field_name=True)
    await enqueue(
        conn,
        topic=NOTICE_TOPIC,
        idempotency_key=request.idempotency_key,
        payload=payload,
        scrub=scrub,
    )


class Deliverer:
    """The outbox relay's delivery: each topic goes to the service that acts on it;
    ``local`` topics go to identity's own handlers."""

    def __init__(
        self,
        notify: grpc.aio.Channel,
        wallet: grpc.aio.Channel,
        *,
        local: Mapping[str, Callable[[OutboxMessage], Awaitable[None]]] | None = None,
    ) -> None:
        self._notify = notify_pb2_grpc.NotifyServiceStub(notify)
        self._wallet = wallet_pb2_grpc.WalletServiceStub(wallet)
        self._local = dict(local or {})

    async def __call__(self, message: OutboxMessage) -> None:
        if message.topic in self._local:
            await self._local[message.topic](message)
        elif message.topic == NOTICE_TOPIC:
            request = json_format.ParseDict(message.payload, notify_pb2.SendNoticeRequest())
            await self._notify.SendNotice(request, timeout=10)
        elif message.topic == CLOSE_WALLET_TOPIC:
            await self._wallet.CloseWallet(
                wallet_pb2.CloseWalletRequest(payer_id=message.payload["payer_id"]), timeout=10
            )
        else:
            raise ValueError(f"no receiver for topic {message.topic!r}")
