"""While a service's PostgreSQL is away, its RPCs answer UNAVAILABLE with advice to
retry with the same idempotency key (not INTERNAL, which reads as a bug), and they
succeed again once the database is back, without restarting the service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from mamoru.risk.v1 import risk_pb2

from tests.harness import Cluster
from tests.support.db_proxy import DatabaseProxy

RETRY_ADVICE = "retry with the same idempotency key"


@pytest_asyncio.fixture
async def proxied_risk(cluster: Cluster) -> AsyncIterator[DatabaseProxy]:
    """Risk started against its real database through a relay the test can cut."""
    proxy = DatabaseProxy(await cluster.new_database("risk"))
    await proxy.start()
    cluster.database_urls["risk"] = proxy.url
    try:
        await cluster.start("risk")
        yield proxy
    finally:
        await cluster.stop("risk")
        await proxy.close()


async def _eventually_ok(call: object, request: object, deadline_seconds: float = 60.0) -> None:
    give_up = time.monotonic() + deadline_seconds
    while True:
        try:
            await call(request, timeout=5)  # type: ignore[operator]
            return
        except grpc.aio.AioRpcError as error:
            if time.monotonic() > give_up:
                raise AssertionError(f"still failing: {error.code()} {error.details()}") from None
        await asyncio.sleep(0.2)


async def test_calls_answer_unavailable_while_the_database_is_away_and_succeed_after(
    cluster: Cluster, proxied_risk: DatabaseProxy
):
    risk = cluster.stub("risk", as_="operator")
    read = risk_pb2.ListPolicyChangesRequest()
    write = risk_pb2.SetPolicyRequest(registration_suspended=True, reason="drill")
    await risk.ListPolicyChanges(read, timeout=5)

    await proxied_risk.cut()
    for call, request in ((risk.ListPolicyChanges, read), (risk.SetPolicy, write)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert RETRY_ADVICE in (refused.value.details() or "")

    await proxied_risk.restore()
    await _eventually_ok(risk.ListPolicyChanges, read)
    await _eventually_ok(risk.SetPolicy, write)
    changes = await risk.ListPolicyChanges(read, timeout=5)
    assert changes.changes, "the write after the outage was stored"
