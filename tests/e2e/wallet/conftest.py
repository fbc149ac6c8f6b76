"""The stack the wallet's person-path tests run on: all four services, people signing
in through the apps' principal and an operator beside them."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from tests.harness import Cluster
from tests.support.identity_driver import IdentityDriver
from tests.support.people import IDENTITY_ENV


@pytest_asyncio.fixture
async def running(cluster: Cluster) -> Cluster:
    await cluster.start("risk", "identity", "notify", "wallet", env=IDENTITY_ENV)
    return cluster


@pytest.fixture
def identity(running: Cluster) -> IdentityDriver:
    return IdentityDriver(
        running.stub("identity", as_="gateway"),
        running.smtp,
        operator=running.stub("identity", as_="operator"),
    )


@pytest.fixture
def wallet(running: Cluster) -> Any:
    return running.stub("wallet", as_="gateway")
