"""One real system for the gateway's tests: identity, risk, notify, wallet and the
gateway, in-process on free ports; a merchant and stores registered through the
wallet's operator RPCs and handed to the gateway with its admin command; a
person with a funded wallet who shows payment codes."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from mamoru.wallet.v1 import wallet_pb2

from services.devstack import devdb
from services.devstack.stack import free_port
from services.gateway import admin
from tests.harness import Cluster
from tests.support.identity_driver import IdentityDriver
from tests.support.payer import Payer
from tests.support.people import IDENTITY_ENV, TIMEOUT

CARD_NUMBER = "4242424242424242"
ALL_SCOPES = (
    "payments:authorize",
    "payments:capture",
    "payments:void",
    "payments:refund",
    "payments:read",
    "topups:cash",
    "merchants:read",
    "webhooks:manage",
)


@dataclass
class Merchant:
    merchant_id: str
    store_ids: list[str]


@dataclass
class Gateway:
    """The running system as a partner's developer and an operator see it."""

    cluster: Cluster
    url: str
    env: dict[str, str]
    merchant: Merchant
    other_merchant: Merchant
    payer: Payer
    http: httpx.AsyncClient

    async def admin(self, *argv: str) -> dict[str, Any]:
        return await admin.run(list(argv), self.env)

    async def partner(
        self,
        *scopes: str,
        requests_per_minute: int = 6000,
        stores: list[str] | None = None,
    ) -> tuple[str, str]:
        """A new partner acting for the merchant (or some of its stores): (client_id, secret)."""
        args = ["partner", "create", "--name", f"partner {uuid.uuid4().hex[:6]}"]
        for scope in scopes or ALL_SCOPES:
            args += ["--scope", scope]
        created = await self.admin(*args, "--requests-per-minute", str(requests_per_minute))
        client_id = created["client_id"]
        grant = ["partner", "grant", client_id, self.merchant.merchant_id]
        for store in stores or []:
            grant += ["--store", store]
        await self.admin(*grant)
        secret = await self.admin("partner", "secret", client_id)
        return client_id, secret["client_secret"]

    async def token(self, client_id: str, secret: str, scope: str = "") -> str:
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        reply = await self.http.post(f"{self.url}/oauth/token", data=form, auth=(client_id, secret))
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])

    async def code(self) -> str:
        return await self.payer.payment_code()


async def _new_database(server_url: str, names: list[str], label: str) -> str:
    name = f"{label}_{uuid.uuid4().hex[:12]}"
    names.append(name)
    return await devdb.ensure_database(server_url, name)


async def _merchant(operator: Any, name: str, stores: int) -> tuple[Merchant, str, str]:
    reply = await operator.RegisterMerchant(
        wallet_pb2.RegisterMerchantRequest(name=name, category="5411"), timeout=TIMEOUT
    )
    merchant_id = reply.merchant.merchant_id
    store_ids = []
    for index in range(stores):
        shop = await operator.RegisterStore(
            wallet_pb2.RegisterStoreRequest(
                merchant_id=merchant_id, store_code=f"s-{index:03d}", name=f"店 {index}"
            ),
            timeout=TIMEOUT,
        )
        store_ids.append(shop.store_id)
    return Merchant(merchant_id, store_ids), reply.merchant_key, name


async def wait_ready(http: httpx.AsyncClient, url: str, within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while True:
            try:
                if (await http.get(f"{url}/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(
    tmp_path_factory: pytest.TempPathFactory, pg_server_url: str, _databases_to_drop: list[str]
) -> AsyncIterator[Gateway]:
    folder: Path = tmp_path_factory.mktemp("gateway")

    async def new_database(label: str = "test") -> str:
        return await _new_database(pg_server_url, _databases_to_drop, label)

    cluster = Cluster(folder, new_database)
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    gateway_env = {
        "GATEWAY_SECRETS_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "GATEWAY_GRPC_PORT": str(free_port()),
        "GATEWAY_HEALTH_PORT": str(free_port()),
        "GATEWAY_HTTP_PORT": str(http_port),
        "GATEWAY_ALLOW_HTTP_WEBHOOKS": "true",
        "GATEWAY_WEBHOOK_SUBSCRIPTIONS_PER_PARTNER": "3",
        "GATEWAY_WEBHOOK_BACKOFF_SECONDS": "0.2",
        "GATEWAY_TOKEN_SECONDS": "60",
        "GATEWAY_TOKEN_REQUESTS_PER_MINUTE": "20",
    }
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        try:
            await cluster.start("risk", "identity", "notify", "wallet", env=IDENTITY_ENV)
            await cluster.start("gateway", env=gateway_env)
            env = {
                **gateway_env,
                "DATABASE_URL": cluster.database_urls["gateway"],
            }
            operator = cluster.stub("wallet", as_="operator")
            merchant, key, name = await _merchant(operator, "コンビニ Mamoru", 2)
            other, other_key, other_name = await _merchant(operator, "Other Mart", 1)
            for shop, its_key, its_name in ((merchant, key, name), (other, other_key, other_name)):
                await admin.run(
                    ["merchant", "add", shop.merchant_id, "--name", its_name, f"--key={its_key}"],
                    env,
                )
                for index, store_id in enumerate(shop.store_ids):
                    await admin.run(
                        [
                            "store",
                            "add",
                            store_id,
                            "--merchant",
                            shop.merchant_id,
                            "--code",
                            f"s-{index:03d}",
                            "--name",
                            f"店 {index}",
                        ],
                        env,
                    )
            identity = IdentityDriver(
                cluster.stub("identity", as_="gateway"),
                cluster.smtp,
                operator=cluster.stub("identity", as_="operator"),
            )
            payer = await identity.new_payer(cluster.stub("wallet", as_="gateway"))
            await payer.enroll()
            token, three_ds = cluster.card_processor.tokenise(CARD_NUMBER)
            card = await payer.register_card(token, three_ds)
            await payer.top_up_from_card(card.funding_source_id, 5_000)
            await wait_ready(http, url)
            yield Gateway(cluster, url, env, merchant, other, payer, http)
        finally:
            await cluster.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 60.0, every: float = 0.05
) -> None:
    """Poll ``check`` until it holds, failing after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polls a service from outside
            await asyncio.sleep(every)
