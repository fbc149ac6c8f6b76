"""Wires the wallet service: storage, clients of other services, the gRPC API."""

from __future__ import annotations

from pathlib import Path

from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from services.runtime.peers import follow_revocations, identity_token_verifier
from services.runtime.server import Resources, ServiceApp, method_access
from services.wallet.access import ACCESS

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"]


async def build(resources: Resources) -> ServiceApp:
    # Every RPC answers UNIMPLEMENTED until the wallet service is built on this shape.
    servicer = wallet_pb2_grpc.WalletServiceServicer()  # type: ignore[abstract]
    identity = resources.connect("identity")
    verifier, revocations = identity_token_verifier(identity)
    return ServiceApp(
        servicers=[(wallet_pb2_grpc.add_WalletServiceServicer_to_server, servicer)],
        service_names=[SERVICE.full_name],
        access=method_access(SERVICE, ACCESS),
        verifier=verifier,
        background=[follow_revocations(identity, revocations)],
        closers=[identity.close],
    )
