"""One real system for the console's page tests: risk, identity, notify, wallet and
the console, in-process on free ports; a signed-in person with a funded wallet;
Debian's Chromium driving the pages as an operator would."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from services.console.domain.operators import entry
from services.devstack import devdb
from services.devstack.stack import free_port
from tests.harness import Cluster
from tests.support.browser import chromium, page_in
from tests.support.identity_driver import IdentityDriver
from tests.support.payer import Payer
from tests.support.people import IDENTITY_ENV

OPERATOR = "aiko.sato"
PASSWORD = "console password for the tests"
CARD_NUMBER = "4242424242424242"
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"
# Risk evaluates its alert rules this often, so a wave shows within a second.
RISK_ENV = {**IDENTITY_ENV, "RISK_ALERT_INTERVAL_SECONDS": "0.2"}


@dataclass
class Console:
    cluster: Cluster
    url: str
    payer: Payer
    card_id: str
    identity: IdentityDriver
    browser: Browser

    def page(self) -> AbstractAsyncContextManager[Page]:
        """A fresh browser context and page (no session yet)."""
        return page_in(self.browser, self.url, locale="en-GB")


async def signed_in(page: Page, name: str = OPERATOR, password: str = PASSWORD) -> None:
    await page.goto("/sign-in")
    await page.get_by_label("Operator name").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/alerts")


async def screenshot(page: Page, name: str) -> None:
    """docs/screenshots/console-NAME.png, when MAMORU_SCREENSHOTS=1 asks for fresh ones
    (other runs leave the committed pictures alone)."""
    if os.environ.get("MAMORU_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"console-{name}.png"), full_page=True)


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 60.0, every: float = 0.05
) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polls a service from outside
            await asyncio.sleep(every)


def console_env(http_port: int) -> dict[str, str]:
    """The console on ``http_port``, with OPERATOR signing in by PASSWORD."""
    return {
        "CONSOLE_OPERATORS": entry(OPERATOR, PASSWORD),
        "CONSOLE_GRPC_PORT": str(free_port()),
        "CONSOLE_HEALTH_PORT": str(free_port()),
        "CONSOLE_HTTP_PORT": str(http_port),
        "CONSOLE_ALERT_POLL_SECONDS": "0.5",
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def console(
    tmp_path_factory: pytest.TempPathFactory, pg_server_url: str, _databases_to_drop: list[str]
) -> AsyncIterator[Console]:
    async def new_database(label: str = "test") -> str:
        name = f"{label}_{uuid.uuid4().hex[:12]}"
        _databases_to_drop.append(name)
        return await devdb.ensure_database(pg_server_url, name)

    cluster = Cluster(tmp_path_factory.mktemp("console"), new_database)
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    try:
        await cluster.start("risk", "identity", "notify", "wallet", env=RISK_ENV)
        await cluster.start("console", env=console_env(http_port))
        identity = IdentityDriver(
            cluster.stub("identity", as_="gateway"),
            cluster.smtp,
            operator=cluster.stub("identity", as_="operator"),
        )
        payer = await identity.new_payer(cluster.stub("wallet", as_="gateway"))
        await payer.enroll()
        token, three_ds = cluster.card_processor.tokenise(CARD_NUMBER)
        card = await payer.register_card(token, three_ds)
        await payer.top_up_from_card(card.funding_source_id, 2_000)
        async with httpx.AsyncClient(timeout=5) as http:

            async def up() -> bool:
                try:
                    return (await http.get(f"{url}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, within=30)
        async with chromium() as browser:
            yield Console(cluster, url, payer, card.funding_source_id, identity, browser)
    finally:
        await cluster.close()
