"""Identity over real servers: risk and notify run beside it; mail lands in the local SMTP."""

from __future__ import annotations

import base64

import pytest_asyncio

from tests.harness import Cluster
from tests.support.identity_driver import IdentityDriver
from tests.support.people import IDENTITY_ENV as PASSKEY_ENV

SECRETS_KEY = base64.b64encode(bytes(range(32))).decode()
IDENTITY_ENV = {"IDENTITY_SECRETS_KEY": SECRETS_KEY, **PASSKEY_ENV}


class IdentityOnCluster(IdentityDriver):
    """The shared person driver plus the cluster, for tests that look inside identity."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(
            cluster.stub("identity", as_="gateway"),
            cluster.smtp,
            operator=cluster.stub("identity", as_="operator"),
        )
        self.cluster = cluster


async def queued_code_notices(cluster: Cluster, kind: str) -> int:
    """How many code notices of ``kind`` (NOTICE_KIND_...) identity queued for notify.

    The codes themselves are blanked once delivered: people read them from mail.
    """
    count: int = await cluster.running["identity"].pool.fetchval(
        "select count(*) from outbox where topic = 'notify.send_notice'"
        " and payload->>'kind' = $1 and payload ? 'code'",
        kind,
    )
    return count


async def start_identity(cluster: Cluster, *extra: str, env: dict[str, str] | None = None) -> None:
    # Identity before notify: notify fetches identity's keys at its first person call.
    await cluster.start("risk", "identity", "notify", *extra, env={**IDENTITY_ENV, **(env or {})})


@pytest_asyncio.fixture
async def identity(cluster: Cluster) -> IdentityOnCluster:
    await start_identity(cluster)
    return IdentityOnCluster(cluster)
