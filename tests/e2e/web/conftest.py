"""One real system for the web pages' tests: identity, risk, notify, wallet and the
web service, in-process on free ports; a merchant with a store and its register;
and Debian's Chromium, driven by Playwright, with a WebAuthn virtual authenticator.

The pages are served at http://localhost:<port>, the origin identity accepts for
passkeys and the base of the links notify writes into mail.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from mamoru.common.v1 import common_pb2
from mamoru.wallet.v1 import wallet_pb2
from playwright.async_api import Browser

from services.devstack import devdb
from services.devstack.stack import free_port
from tests.harness import Cluster
from tests.support.browser import chromium
from tests.support.people import TIMEOUT

SCREENSHOTS = os.environ.get("MAMORU_SCREENSHOTS", "")


@dataclass
class Register:
    """A shop's register: captures payments from the codes people show."""

    wallet: Any
    merchant_key: str
    store_id: str

    async def capture(self, code: str, amount: int) -> wallet_pb2.Payment:
        reply = await self.wallet.CapturePayment(
            wallet_pb2.CapturePaymentRequest(
                code=code,
                amount=common_pb2.Money(amount_minor=amount, currency="JPY"),
                store_id=self.store_id,
                idempotency_key=str(uuid.uuid4()),
            ),
            metadata=(("x-merchant-key", self.merchant_key),),
            timeout=TIMEOUT,
        )
        payment: wallet_pb2.Payment = reply.payment
        return payment


@dataclass
class WebStack:
    cluster: Cluster
    url: str
    register: Register
    browser: Browser

    @property
    def mailbox(self) -> Any:
        return self.cluster.smtp

    async def screenshot(self, page: Any, name: str) -> None:
        """Saved for the README when MAMORU_SCREENSHOTS names a folder."""
        if SCREENSHOTS:
            await asyncio.to_thread(Path(SCREENSHOTS).mkdir, parents=True, exist_ok=True)
            await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


async def wait_ready(url: str, within: float = 60.0) -> None:
    """Until ``url``/healthz answers 200."""
    async with httpx.AsyncClient(timeout=5.0) as http, asyncio.timeout(within):
        while True:
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


def pages_env(url: str) -> dict[str, str]:
    """What identity and notify need to serve the pages at ``url``."""
    return {
        "IDENTITY_WEBAUTHN_RP_ID": "localhost",
        "IDENTITY_WEBAUTHN_ORIGINS": url,
        "NOTIFY_LINK_BASE_URL": url,
    }


def web_env(cluster: Cluster, port: int, url: str) -> dict[str, str]:
    return {
        "WEB_SECRETS_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "WEB_GRPC_PORT": str(free_port()),
        "WEB_HEALTH_PORT": str(free_port()),
        "WEB_HTTP_PORT": str(port),
        "WEB_PUBLIC_URL": url,
        "WEB_CARD_PROCESSOR_URL": cluster.card_processor.url,
        # Each test person browses from an address of their own (risk counts per IP).
        "WEB_TRUST_FORWARDED_FOR": "true",
    }


async def start_pages(cluster: Cluster, env: dict[str, str] | None = None) -> str:
    """Risk, identity, notify and wallet (``env`` overriding their settings), then the
    web service; returns the pages' URL once they answer."""
    port = free_port()
    url = f"http://localhost:{port}"
    await cluster.start(
        "risk", "identity", "notify", "wallet", env={**(env or {}), **pages_env(url)}
    )
    await cluster.start("web", env=web_env(cluster, port, url))
    await wait_ready(url)
    return url


async def shop_register(cluster: Cluster) -> Register:
    """A merchant with one store, and the register that captures its payments."""
    operator = cluster.stub("wallet", as_="operator")
    merchant = await operator.RegisterMerchant(
        wallet_pb2.RegisterMerchantRequest(name="コンビニ Mamoru", category="5411"),
        timeout=TIMEOUT,
    )
    store = await operator.RegisterStore(
        wallet_pb2.RegisterStoreRequest(
            merchant_id=merchant.merchant.merchant_id, store_code="s-001", name="駅前店"
        ),
        timeout=TIMEOUT,
    )
    return Register(cluster.stub("wallet", as_="pos"), merchant.merchant_key, store.store_id)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def web(
    tmp_path_factory: pytest.TempPathFactory, pg_server_url: str, _databases_to_drop: list[str]
) -> AsyncIterator[WebStack]:
    folder: Path = tmp_path_factory.mktemp("web")

    async def new_database(label: str = "test") -> str:
        name = f"{label}_{uuid.uuid4().hex[:12]}"
        _databases_to_drop.append(name)
        return await devdb.ensure_database(pg_server_url, name)

    cluster = Cluster(folder, new_database)
    try:
        url = await start_pages(cluster)
        register = await shop_register(cluster)
        async with chromium() as browser:
            yield WebStack(cluster, url, register, browser)
    finally:
        await cluster.close()
