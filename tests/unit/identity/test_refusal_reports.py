"""Identity reports the attempts it refuses before asking risk at most so often; each
report past that rate stands for the refusals it left out, so none goes uncounted."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2

from services.identity.clients.risk import RiskClient


async def test_a_sampled_flood_is_reported_whole_by_the_reports_that_get_through():
    channel = grpc.aio.insecure_channel("127.0.0.1:9")  # nothing is sent: reports are kept
    client = RiskClient(channel, timeout_seconds=1, refusal_reports_per_second=2)
    sent: list[dict[str, Any]] = []

    def keep(outcome: risk_pb2.Outcome.ValueType, **fields: Any) -> None:
        sent.append({"outcome": outcome, **fields})

    client.record_outcome = keep  # type: ignore[method-assign]
    where = common_pb2.ClientContext(ip_address="203.0.113.9", device_id="bot-1")
    try:
        reported = [client.report_refusal(client=where, identifier_hash="h") for _ in range(10)]
        # The bucket holds one second's worth: two reports, then eight refusals left out.
        assert reported == [True, True] + [False] * 8
        await asyncio.sleep(0.6)  # at least one report's worth of the rate comes back
        assert client.report_refusal(client=where, identifier_hash="h")
    finally:
        await channel.close()
    assert [report["represents"] for report in sent] == [1, 1, 9]
    assert {report["outcome"] for report in sent} == {risk_pb2.OUTCOME_PASSWORD_WRONG}
