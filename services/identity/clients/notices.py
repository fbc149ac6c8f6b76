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
from google.protobuf.struct_pb2 import Struct
from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.runtime.outbox import OutboxMessage
from services.runtime.topics import OutboxRouter, Topic

# Each topic's stored payload is byte for byte what it was before topics were typed,
# so rows already in the outbox deliver under the same names.
NOTICE = Topic("notify.send_notice", notify_pb2.SendNoticeRequest)
CLOSE_WALLET = Topic("wallet.close_wallet", wallet_pb2.CloseWalletRequest)
# A password reset request, handled by identity itself after the answer was given.
# Strings only, so a Struct carries it unchanged.
RESET_REQUEST = Topic("identity.reset_requested", Struct)
# A wrong or expired password, counted by identity itself after the answer was given.
# Strings, a bool and a null account: nothing a Struct would turn into a float.
FAILED_SIGN_IN = Topic("identity.sign_in_failed", Struct)

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
    await CLOSE_WALLET.enqueue(
        conn,
        wallet_pb2.CloseWalletRequest(payer_id=str(payer_id)),
        idempotency_key=f"identity:close-wallet:{payer_id}",
    )


async def _enqueue_notice(
    conn: asyncpg.Connection,
    request: notify_pb2.SendNoticeRequest,
    scrub: Sequence[Sequence[str]] = (),
) -> None:
    await NOTICE.enqueue(conn, request, idempotency_key=request.idempotency_key, scrub=scrub)


def struct(payload: Mapping[str, Any]) -> Struct:
    """A plain JSON object as the Struct a local topic carries."""
    message = Struct()
    message.update(payload)
    return message


LocalHandler = Callable[[OutboxMessage], Awaitable[None]]


def outbox_router(
    notify: grpc.aio.Channel,
    wallet: grpc.aio.Channel,
    *,
    reset_request: LocalHandler,
    failed_sign_in: LocalHandler,
) -> OutboxRouter:
    """The outbox relay's delivery: notices to notify, closures to wallet, and the
    work identity left for itself until after an answer to its own handlers."""
    notify_stub = notify_pb2_grpc.NotifyServiceStub(notify)
    wallet_stub = wallet_pb2_grpc.WalletServiceStub(wallet)

    async def send_notice(request: notify_pb2.SendNoticeRequest, _: OutboxMessage) -> None:
        await notify_stub.SendNotice(request, timeout=10)

    async def close(request: wallet_pb2.CloseWalletRequest, _: OutboxMessage) -> None:
        await wallet_stub.CloseWallet(request, timeout=10)

    def local(handle: LocalHandler) -> Callable[[Struct, OutboxMessage], Awaitable[None]]:
        # The handler reads the stored JSON: a Struct would hand it numbers as floats.
        async def route(_: Struct, message: OutboxMessage) -> None:
            await handle(message)

        return route

    return (
        OutboxRouter()
        .on(NOTICE, send_notice)
        .on(CLOSE_WALLET, close)
        .on(RESET_REQUEST, local(reset_request))
        .on(FAILED_SIGN_IN, local(failed_sign_in))
    )
