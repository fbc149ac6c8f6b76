"""Wires the identity service: storage, clients of other services, the gRPC API."""

from __future__ import annotations

from pathlib import Path

from mamoru.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity.access import ACCESS
from services.runtime.peers import follow_revocations, identity_token_verifier
from services.runtime.server import Resources, ServiceApp, method_access

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]


async def build(resources: Resources) -> ServiceApp:
    # Every RPC answers UNIMPLEMENTED until the identity service is built on this shape.
    servicer = identity_pb2_grpc.IdentityServiceServicer()  # type: ignore[abstract]
    identity = resources.connect("identity")
    verifier, revocations = identity_token_verifier(identity)
    return ServiceApp(
        servicers=[(identity_pb2_grpc.add_IdentityServiceServicer_to_server, servicer)],
        service_names=[SERVICE.full_name],
        access=method_access(SERVICE, ACCESS),
        verifier=verifier,
        background=[follow_revocations(identity, revocations)],
        closers=[identity.close],
    )
