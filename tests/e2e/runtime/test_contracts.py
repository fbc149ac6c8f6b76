"""A running service refuses a request that breaks a rule written in its proto.

``OpenCaseRequest.movement_id`` is a single line of at most 128 characters by a
``buf.validate`` rule in risk.proto; the runtime checks it before the handler and
answers in the same BadRequest shape as every other field refusal.
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mamoru.risk.v1 import risk_pb2

from tests.harness import Cluster

TIMEOUT = 10.0


async def test_a_rule_from_the_proto_refuses_a_request_naming_the_field(
    cluster: Cluster,
) -> None:
    await cluster.start("risk")
    wallet = cluster.stub("risk", as_="wallet")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await wallet.OpenCase(
            risk_pb2.OpenCaseRequest(
                source=risk_pb2.CASE_SOURCE_USER_REPORT,
                account_id="3f0c1d52-8a0e-4c11-9a55-0c2f3b7b1e01",
                movement_id="line one\nline two",
                idempotency_key="open-case-contract",
            ),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(refused.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    # The proto's wording, not the handler's (which names the code point).
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("movement_id", "must not contain control characters")
    ]
