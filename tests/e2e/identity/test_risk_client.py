"""Identity's risk client against a real risk server: the sign-ins that arrive
together are assessed in one call, and one that risk cannot read costs the
others nothing."""

from __future__ import annotations

import asyncio
import uuid

from mamoru.common.v1 import common_pb2

from services.identity.clients.risk import Assessment, RiskClient
from services.identity.domain.login import RiskVerdict
from tests.e2e.runtime.test_metrics import scrape


async def test_sign_ins_arriving_together_each_get_their_own_verdict_even_beside_an_unreadable_one(
    cluster,
):
    await cluster.start("risk")
    risk = RiskClient(cluster.channel("risk", as_="identity"), timeout_seconds=30)

    def attempt(n: int, method: str = "password") -> asyncio.Task[Assessment]:
        return asyncio.create_task(
            risk.assess_login(
                account_id=uuid.uuid4(),
                identifier_hash=f"person-{n}",
                client=common_pb2.ClientContext(ip_address=f"133.0.{n}.1", device_id=f"phone-{n}"),
                known_device=True,
                method=method,
            )
        )

    before = await assess_calls(cluster)
    answers = await asyncio.gather(
        attempt(1), attempt(2), attempt(3, method="carrier pigeon"), attempt(4)
    )

    verdicts = [answer.verdict for answer in answers]
    assert verdicts == [
        RiskVerdict.ALLOW,
        RiskVerdict.ALLOW,
        RiskVerdict.UNAVAILABLE,
        RiskVerdict.ALLOW,
    ]
    decisions = {answer.decision_id for answer in answers}
    assert len(decisions - {""}) == 3
    # They left together: one batch call, refused for the unreadable attempt, then
    # each attempt on its own.
    # Risk is shared with the other tests of the session, so only this test's
    # calls are counted.
    after = await assess_calls(cluster)
    assert {method: after[method] - before[method] for method in after} == {
        "/AssessLogins": 1,
        "/AssessLogin": 4,
    }


async def assess_calls(cluster) -> dict[str, float]:
    """Risk's count of AssessLogins and AssessLogin calls served so far."""
    samples = await scrape(cluster.metrics_url("risk"))
    return {
        method: sum(
            v
            for (name, labels), v in samples.items()
            if name == "mamoru_rpc_requests_total"
            and dict(labels).get("method", "").endswith(method)
        )
        for method in ("/AssessLogins", "/AssessLogin")
    }
