"""While a service's PostgreSQL is away, its RPCs answer UNAVAILABLE with advice to
retry with the same idempotency key (not INTERNAL, which reads as a bug), and they
succeed again once the database is back, without restarting the service."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2

from tests.harness import Cluster
from tests.support.db_proxy import DatabaseProxy
from tests.support.identity_driver import IdentityDriver
from tests.support.people import IDENTITY_ENV

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
    await risk.ListPolicyChanges(read, timeout=30)

    await proxied_risk.cut()
    for call, request in ((risk.ListPolicyChanges, read), (risk.SetPolicy, write)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert RETRY_ADVICE in (refused.value.details() or "")

    await proxied_risk.restore()
    await _eventually_ok(risk.ListPolicyChanges, read)
    await _eventually_ok(risk.SetPolicy, write)
    changes = await risk.ListPolicyChanges(read, timeout=30)
    assert changes.changes, "the write after the outage was stored"


async def test_a_cash_top_up_refused_during_the_outage_lands_once_when_retried_with_its_key(
    cluster: Cluster,
):
    proxy = DatabaseProxy(await cluster.new_database("wallet"))
    await proxy.start()
    cluster.database_urls["wallet"] = proxy.url
    try:
        await cluster.start("risk", "notify", "identity", "wallet", env=IDENTITY_ENV)
        identity = IdentityDriver(cluster.stub("identity", as_="gateway"), cluster.smtp)
        payer = await identity.new_payer(cluster.stub("wallet", as_="gateway"))
        await payer.enroll()
        operator = cluster.stub("wallet", as_="operator")
        merchant = await operator.RegisterMerchant(
            wallet_pb2.RegisterMerchantRequest(name="コンビニ Mamoru", category="5411"), timeout=10
        )
        shop = await operator.RegisterStore(
            wallet_pb2.RegisterStoreRequest(
                merchant_id=merchant.merchant.merchant_id, store_code="tokyo-001", name="渋谷店"
            ),
            timeout=10,
        )
        issued = await payer.wallet.IssueCashTopUpCode(
            wallet_pb2.IssueCashTopUpCodeRequest(
                channel=risk_pb2.TOP_UP_CHANNEL_CASH_REGISTER, client=payer.client
            ),
            metadata=payer.metadata,
            timeout=10,
        )
        accept = wallet_pb2.AcceptCashTopUpRequest(
            code=issued.code,
            amount=common_pb2.Money(amount_minor=3_000, currency="JPY"),
            store_id=shop.store_id,
            idempotency_key=str(uuid.uuid4()),
        )
        register = cluster.stub("wallet", as_="pos")
        till = (("x-merchant-key", merchant.merchant_key),)

        await proxy.cut()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await register.AcceptCashTopUp(accept, metadata=till, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert RETRY_ADVICE in (refused.value.details() or "")

        await proxy.restore()
        await _eventually_ok(
            lambda request, timeout: register.AcceptCashTopUp(
                request, metadata=till, timeout=timeout
            ),
            accept,
        )
        await register.AcceptCashTopUp(accept, metadata=till, timeout=10)
        balance = await payer.balance()
        assert balance.wallet.balance.amount_minor == 3_000
        report = await operator.Reconcile(wallet_pb2.ReconcileRequest(), timeout=10)
        assert report.balanced
    finally:
        await cluster.stop("wallet")
        await proxy.close()
