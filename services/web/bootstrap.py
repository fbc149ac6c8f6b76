"""Wires the people's pages: the session store, identity and the wallet, the HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mamoru.identity.v1 import identity_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2_grpc

from services.gateway.domain.sealing import SecretBox
from services.runtime.server import Resources, ServiceApp
from services.web import jobs
from services.web.access import ACCESS
from services.web.api.app import Deps, create_app
from services.web.api.web import Browser
from services.web.settings import WebSettings
from services.web.storage.sessions import SessionStore
from services.web.use_cases.accounts import Accounts
from services.web.use_cases.money import Money

MIGRATIONS = Path(__file__).parent / "migrations"


async def build(resources: Resources) -> ServiceApp:
    settings = resources.settings
    assert isinstance(settings, WebSettings)
    identity = resources.connect("identity")
    wallet = resources.connect("wallet")
    store = SessionStore(
        resources.pool, SecretBox(settings.sealing_key()), settings.session_hours * 3600
    )
    secure = settings.secure_cookies()
    # "__Host-" binds the cookie to this origin over TLS: no Domain, Path=/, Secure.
    cookie = "__Host-mamoru-session" if secure else "mamoru-session"
    deps = Deps(
        browser=Browser(store, cookie, secure),
        accounts=Accounts(
            identity_pb2_grpc.IdentityServiceStub(identity), settings.call_timeout_seconds
        ),
        money=Money(
            wallet_pb2_grpc.WalletServiceStub(wallet),
            settings.call_timeout_seconds,
            settings.card_processor_url,
        ),
        trust_forwarded_for=settings.trust_forwarded_for,
    )

    async def ready() -> bool:
        return True

    app: Any = create_app(deps=deps, origin=settings.origin(), ready=ready)
    sock = jobs.bind(settings.http_host, settings.http_port)
    return ServiceApp(
        servicers=[],
        service_names=[],
        access=ACCESS,
        background=[
            jobs.http_server(
                app,
                sock,
                stopping=resources.stopping,
                grace_seconds=settings.shutdown_grace_seconds,
            ),
            jobs.housekeeping(store),
        ],
        closers=[identity.close, wallet.close],
    )
