"""A handler's refusal reaches the caller as its code, message and ErrorInfo details.

A real grpc.aio server with the runtime's error-mapping interceptor; refusals are
encoded once and reused, so these calls repeat and interleave refusals to show that
each caller still gets exactly its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.runtime.errors import (
    ERROR_DOMAIN,
    DomainError,
    ErrorMappingInterceptor,
    FailedPrecondition,
    Unauthenticated,
)

SERVICE = "mamoru.test.Refusals"

# request bytes -> the refusal the handler raises for it
REFUSALS: dict[bytes, DomainError] = {
    b"wrong-password": Unauthenticated("INVALID_CREDENTIALS", "invalid credentials"),
    b"frozen": FailedPrecondition("WALLET_FROZEN", metadata={"wallet": "w-1"}),
    b"frozen-other": FailedPrecondition("WALLET_FROZEN", metadata={"wallet": "w-2"}),
    b"limit": FailedPrecondition("LIMIT_EXCEEDED", "over the daily limit"),
}


async def refuse(request: bytes, context: Any) -> bytes:
    raise REFUSALS[request]


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    handlers = grpc.method_handlers_generic_handler(
        SERVICE, {"Refuse": grpc.unary_unary_rpc_method_handler(refuse)}
    )
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    server.add_generic_rpc_handlers([handlers])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(None)


async def answer_to(channel: grpc.aio.Channel, request: bytes) -> tuple[Any, ...]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await channel.unary_unary(f"/{SERVICE}/Refuse")(request)
    status = rpc_status.from_call(refused.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.domain == ERROR_DOMAIN
    return refused.value.code(), refused.value.details(), info.reason, dict(info.metadata)


async def test_repeated_and_interleaved_refusals_each_reach_the_caller_as_raised(
    channel: grpc.aio.Channel,
) -> None:
    expected = {
        b"wrong-password": (
            grpc.StatusCode.UNAUTHENTICATED,
            "invalid credentials",
            "INVALID_CREDENTIALS",
            {},
        ),
        b"frozen": (
            grpc.StatusCode.FAILED_PRECONDITION,
            "wallet frozen",
            "WALLET_FROZEN",
            {"wallet": "w-1"},
        ),
        b"frozen-other": (
            grpc.StatusCode.FAILED_PRECONDITION,
            "wallet frozen",
            "WALLET_FROZEN",
            {"wallet": "w-2"},
        ),
        b"limit": (
            grpc.StatusCode.FAILED_PRECONDITION,
            "over the daily limit",
            "LIMIT_EXCEEDED",
            {},
        ),
    }
    for request in [*expected, *reversed(expected), *expected]:
        assert await answer_to(channel, request) == expected[request], request
