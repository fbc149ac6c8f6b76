"""The operator CLI against a real risk service."""

from __future__ import annotations

import io
import json
from typing import Any

from services.ops import cli


async def mamoru(cluster, *argv: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = await cli.run(
        ["--operator", "sre-1", *argv], address=cluster.address("risk"),
        tls_dir=cluster.tls_dir, out=out,
    )  # fmt: skip
    return code, json.loads(out.getvalue()) if out.getvalue() else {}


async def test_an_operator_suspends_card_top_ups_and_sees_who_did_it_and_why(cluster):
    await cluster.start("risk")
    code, reply = await mamoru(
        cluster, "policy", "set", "top_up_channel", "card", "on", "--reason", "card testing"
    )
    assert code == 0
    assert reply["policy"]["topUpSuspendedChannels"] == ["TOP_UP_CHANNEL_CARD"]
    code, shown = await mamoru(cluster, "policy", "show")
    assert shown["policy"]["version"] == "1"
    code, history = await mamoru(cluster, "policy", "history")
    assert [(c["actor"], c["reason"]) for c in history["changes"]] == [
        ("operator:sre-1", "card testing")
    ]


async def test_a_policy_change_without_a_reason_is_refused_by_the_server(cluster):
    await cluster.start("risk")
    code, _ = await mamoru(cluster, "policy", "set", "wind_down", "on", "--reason", " ")
    assert code == 1
    code, shown = await mamoru(cluster, "policy", "show")
    assert shown["policy"]["version"] == "0"


async def test_alerts_cases_and_victim_queries_are_listed(cluster):
    await cluster.start("risk")
    assert (await mamoru(cluster, "alerts", "--status", "open"))[1] == {
        "alerts": [], "nextPageToken": ""
    }  # fmt: skip
    assert (await mamoru(cluster, "cases"))[1] == {"cases": [], "nextPageToken": ""}
    code, victims = await mamoru(
        cluster, "victims", "--ip", "203.0.113.7", "--since", "2025-01-01T00:00:00+00:00"
    )
    assert code == 0
    assert victims["accounts"] == []
    assert victims["total"]["amountMinor"] == "0"
    assert (await mamoru(cluster, "victims", "--ip", "203.0.113.7"))[0] == 2


async def test_an_operator_blocks_a_network_and_lifts_a_containment_from_the_cli(cluster):
    await cluster.start("risk")
    code, reply = await mamoru(
        cluster, "policy", "set", "network", "203.0.113.0/24", "on", "--reason", "rented block"
    )
    assert code == 0
    assert reply["policy"]["blockedNetworks"] == ["203.0.113.0/24"]
    code, _ = await mamoru(
        cluster, "policy", "set", "network", "203.0.113.7/24", "on", "--reason", "typo"
    )
    assert code == 1
    code, lifted = await mamoru(
        cluster, "policy", "lift-containment", "--reason", "a carrier's NAT"
    )
    assert code == 0
    assert lifted["policy"]["containedNetworks"] == []
    code, history = await mamoru(cluster, "policy", "history")
    assert [
        (c["reason"], json.loads(c["changeJson"])["policy"]["switch"]) for c in history["changes"]
    ] == [("a carrier's NAT", "lift_containment"), ("rented block", "network")]
