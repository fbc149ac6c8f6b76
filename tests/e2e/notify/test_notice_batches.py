"""SendNotices over real servers: the notices of one call are each accepted once and
delivered as if each had come alone; a call holding one the caller may not send
is refused whole."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest
from mamoru.common.v1 import common_pb2
from mamoru.notify.v1 import notify_pb2

from tests.e2e.notify.test_notify_service import (
    TIMEOUT,
    register,
    reset_request,
    start,
)
from tests.harness import Cluster


async def test_notices_sent_together_are_each_accepted_once_and_reach_their_own_person(
    cluster: Cluster,
) -> None:
    await start(cluster)
    hanako = await register(cluster, "hanako@example.jp")
    taro = await register(cluster, "taro@example.jp")
    before = len(cluster.smtp.messages)
    notices = [
        reset_request(hanako, key="reset-hanako"),
        reset_request(taro, key="reset-taro"),
        reset_request(hanako, key="reset-hanako"),
    ]

    reply = await cluster.stub("notify", as_="identity").SendNotices(
        notify_pb2.SendNoticesRequest(notices=notices), timeout=TIMEOUT
    )

    assert len(reply.answers) == 3
    assert reply.answers[0].notice_id == reply.answers[2].notice_id
    assert reply.answers[0].notice_id != reply.answers[1].notice_id
    messages = (await cluster.smtp.wait_for(before + 2, within=TIMEOUT))[before:]
    assert sorted(r for m in messages for r in m.recipients) == [
        "hanako@example.jp",
        "taro@example.jp",
    ]


async def test_a_batch_holding_a_kind_the_caller_may_not_send_is_refused_and_sends_nothing(
    cluster: Cluster,
) -> None:
    await start(cluster)
    payer_id = str(uuid.uuid4())
    top_up = notify_pb2.SendNoticeRequest(
        payer_id=payer_id,
        kind=notify_pb2.NOTICE_KIND_TOP_UP,
        money=notify_pb2.MoneyParams(
            amount=common_pb2.Money(amount_minor=5000, currency="JPY"),
            counterparty="VISA ****4242",
            movement_id=str(uuid.uuid4()),
        ),
        idempotency_key="top-up-1",
    )
    security = notify_pb2.SendNoticeRequest(
        payer_id=payer_id,
        kind=notify_pb2.NOTICE_KIND_NEW_DEVICE_SIGN_IN,
        security_event=notify_pb2.SecurityEventParams(detail="x"),
        idempotency_key="not-allowed",
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cluster.stub("notify", as_="wallet").SendNotices(
            notify_pb2.SendNoticesRequest(notices=[top_up, security]), timeout=TIMEOUT
        )

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    database = await asyncpg.connect(cluster.database_urls["notify"])
    try:
        stored = await database.fetchval(
            "select count(*) from notices where idempotency_key = any($1::text[])",
            ["top-up-1", "not-allowed"],
        )
    finally:
        await database.close()
    assert stored == 0
