"""Wires the notify service: storage, clients of other services, the gRPC API."""

from __future__ import annotations

from pathlib import Path

from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc

from services.notify.access import ACCESS
from services.runtime.peers import follow_revocations, identity_token_verifier
from services.runtime.server import Resources, ServiceApp, method_access

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = notify_pb2.DESCRIPTOR.services_by_name["NotifyService"]


async def build(resources: Resources) -> ServiceApp:
    # Every RPC answers UNIMPLEMENTED until the notify service is built on this shape.
    servicer = notify_pb2_grpc.NotifyServiceServicer()  # type: ignore[abstract]
    identity = resources.connect("identity")
    verifier, revocations = identity_token_verifier(identity)
    return ServiceApp(
        servicers=[(notify_pb2_grpc.add_NotifyServiceServicer_to_server, servicer)],
        service_names=[SERVICE.full_name],
        access=method_access(SERVICE, ACCESS),
        verifier=verifier,
        background=[follow_revocations(identity, revocations)],
        closers=[identity.close],
    )
