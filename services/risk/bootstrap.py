"""Wires the risk service: storage, clients of other services, the gRPC API."""

from __future__ import annotations

from pathlib import Path

from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

from services.risk.access import ACCESS
from services.runtime.server import Resources, ServiceApp, method_access

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = risk_pb2.DESCRIPTOR.services_by_name["RiskService"]


async def build(resources: Resources) -> ServiceApp:
    # Every RPC answers UNIMPLEMENTED until the risk service is built on this shape.
    servicer = risk_pb2_grpc.RiskServiceServicer()  # type: ignore[abstract]
    return ServiceApp(
        servicers=[(risk_pb2_grpc.add_RiskServiceServicer_to_server, servicer)],
        service_names=[SERVICE.full_name],
        access=method_access(SERVICE, ACCESS),
    )
