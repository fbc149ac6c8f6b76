"""Wires the operators' console: its database, the services it calls as ``operator``,
and the HTTP pages."""

from __future__ import annotations

from pathlib import Path

from mamoru.identity.v1 import identity_pb2_grpc
from mamoru.risk.v1 import risk_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2_grpc

from services.console import jobs
from services.console.access import ACCESS, PRINCIPAL
from services.console.api.app import create_app
from services.console.api.security import Cookies
from services.console.clients.peers import Peers
from services.console.settings import ConsoleSettings
from services.console.use_cases.operations import Operations
from services.console.use_cases.sign_in import SignIn
from services.runtime import tracing
from services.runtime.http import bind, http_server
from services.runtime.rpc_context import request_id_client_interceptors
from services.runtime.server import Resources, ServiceApp
from services.runtime.tls import load_tls, secure_channel

MIGRATIONS = Path(__file__).parent / "migrations"


async def build(resources: Resources) -> ServiceApp:
    settings = resources.settings
    assert isinstance(settings, ConsoleSettings)
    pool = resources.pool
    # The console's own certificate serves its health port; to its peers it is an
    # operators' tool and presents the operator certificate.
    operator_tls = load_tls(settings.operator_tls(), PRINCIPAL)
    channels = {
        peer: secure_channel(
            settings.peer_address(peer),
            operator_tls,
            server_name=peer,
            interceptors=[*tracing.client_interceptors(), *request_id_client_interceptors()],
        )
        for peer in ("risk", "identity", "wallet")
    }
    peers = Peers(
        risk=risk_pb2_grpc.RiskServiceStub(channels["risk"]),
        identity=identity_pb2_grpc.IdentityServiceStub(channels["identity"]),
        wallet=wallet_pb2_grpc.WalletServiceStub(channels["wallet"]),
        timeout=settings.peer_timeout_seconds,
    )
    operations = Operations(pool, peers)
    sign_in = SignIn(
        pool,
        settings.operator_book(),
        settings.session_seconds,
        settings.sign_in_failures_allowed,
    )

    async def ready() -> bool:
        return True

    app = create_app(
        sign_in=sign_in,
        operations=operations,
        peers=peers,
        cookies=Cookies(secure=settings.secure_cookies, session_seconds=settings.session_seconds),
        poll_seconds=settings.alert_poll_seconds,
        ready=ready,
    )
    sock = bind(settings.http_host, settings.http_port)

    async def close_channels() -> None:
        for channel in channels.values():
            await channel.close()

    return ServiceApp(
        servicers=[],
        service_names=[],
        access=ACCESS,
        background=[
            http_server(
                app,
                sock,
                stopping=resources.stopping,
                grace_seconds=settings.shutdown_grace_seconds,
            ),
            jobs.housekeeping(pool),
        ],
        closers=[operations.close, close_channels],
    )
