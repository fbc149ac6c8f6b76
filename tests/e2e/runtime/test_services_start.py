"""Each of the four services starts on the shared runtime, reports SERVING on
its plaintext health port, and lists its contract through server reflection."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from services.runtime.tls import channel_credentials, load_tls
from tests.harness import Cluster

SERVICES = {
    "identity": "mamoru.identity.v1.IdentityService",
    "wallet": "mamoru.wallet.v1.WalletService",
    "risk": "mamoru.risk.v1.RiskService",
    "notify": "mamoru.notify.v1.NotifyService",
}


async def test_every_service_is_serving_and_lists_its_contract(cluster: Cluster) -> None:
    await cluster.start("risk", "notify", "identity", "wallet")
    for name, full_name in SERVICES.items():
        running = cluster.running[name]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.health_port}") as plain:
            reply = await health_pb2_grpc.HealthStub(plain).Check(
                health_pb2.HealthCheckRequest(service=full_name), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name

        listed = await asyncio.to_thread(_reflected_services, cluster, name)
        assert full_name in listed, name


async def test_a_service_refuses_a_caller_that_is_not_on_the_allow_list(
    cluster: Cluster,
) -> None:
    from mamoru.risk.v1 import risk_pb2

    await cluster.start("risk")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cluster.stub("risk", as_="pos").SetPolicy(
            risk_pb2.SetPolicyRequest(registration_suspended=True, reason="test")
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _reflected_services(cluster: Cluster, name: str) -> list[str]:
    """Reflection's client helper is synchronous: it runs in a thread, over mTLS."""
    credentials = channel_credentials(load_tls(cluster.tls_dir, "operator"))
    with grpc.secure_channel(
        cluster.address(name), credentials, options=[("grpc.ssl_target_name_override", name)]
    ) as channel:
        return list(ProtoReflectionDescriptorDatabase(channel).get_services())


async def test_health_watch_answers_on_the_service_port_too(cluster: Cluster) -> None:
    # Watch sends with context.write(); every runtime wrapper must relay that style.
    await cluster.start("risk")
    channel = cluster.channel("risk", as_="operator")
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICES["risk"]), timeout=10
    )
    first = await watch.read()
    watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
