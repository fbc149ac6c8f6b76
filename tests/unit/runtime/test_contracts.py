"""The proto's buf.validate rules refuse a request before its handler, in the one error shape.

A real grpc.aio server with the runtime's error-mapping and validation interceptors
serves handlers that record what reached them; the request types are Mamoru's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mamoru.common.v1 import common_pb2
from mamoru.identity.v1 import identity_pb2
from mamoru.wallet.v1 import wallet_pb2

from services.runtime import contracts
from services.runtime.contracts import RequestValidationInterceptor
from services.runtime.errors import ErrorMappingInterceptor

Request = wallet_pb2.ClaimPayoutRequest
Reply = wallet_pb2.ClaimPayoutResponse
SERVICE = "mamoru.test.Contracts"
GOOD_KEY = "payout-2026-11-28"


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def unary(self, request: Any, context: Any) -> Reply:
        self.seen.append(request)
        return Reply()

    async def client_stream(self, requests: AsyncIterator[Any], context: Any) -> Reply:
        async for request in requests:
            self.seen.append(request)
        return Reply()

    async def server_stream(self, request: Any, context: Any) -> AsyncIterator[Reply]:
        self.seen.append(request)
        yield Reply()


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, _Recorder]]:
    recorder = _Recorder()
    codecs: dict[str, Any] = {
        "request_deserializer": Request.FromString,
        "response_serializer": Reply.SerializeToString,
    }
    handlers = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(recorder.unary, **codecs),
            "ClientStream": grpc.stream_unary_rpc_method_handler(recorder.client_stream, **codecs),
            "ServerStream": grpc.unary_stream_rpc_method_handler(recorder.server_stream, **codecs),
        },
    )
    server = grpc.aio.server(
        interceptors=[ErrorMappingInterceptor(), RequestValidationInterceptor()]
    )
    server.add_generic_rpc_handlers([handlers])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, recorder
    finally:
        await channel.close()
        await server.stop(None)


def _method(channel: grpc.aio.Channel, kind: str, name: str) -> Any:
    factory = getattr(channel, kind)
    return factory(
        f"/{SERVICE}/{name}",
        request_serializer=Request.SerializeToString,
        response_deserializer=Reply.FromString,
    )


def _field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return [(v.field, v.description) for v in bad_request.field_violations]


async def test_a_request_breaking_a_proto_rule_is_refused_naming_the_field(
    served: tuple[grpc.aio.Channel, _Recorder],
) -> None:
    channel, recorder = served
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _method(channel, "unary_unary", "Unary")(Request(idempotency_key="has space"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field_violations(refused.value) == [
        ("idempotency_key", "must be 1 to 128 printable ASCII characters")
    ]
    assert recorder.seen == []


async def test_a_valid_request_reaches_its_handler_untouched(
    served: tuple[grpc.aio.Channel, _Recorder],
) -> None:
    channel, recorder = served
    await _method(channel, "unary_unary", "Unary")(Request(idempotency_key=GOOD_KEY))
    assert recorder.seen == [Request(idempotency_key=GOOD_KEY)]


async def test_each_message_of_a_client_stream_is_checked_before_the_handler_sees_it(
    served: tuple[grpc.aio.Channel, _Recorder],
) -> None:
    channel, recorder = served
    stream = [Request(idempotency_key=GOOD_KEY), Request(idempotency_key="")]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _method(channel, "stream_unary", "ClientStream")(iter(stream))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in _field_violations(refused.value)] == ["idempotency_key"]
    assert recorder.seen == [Request(idempotency_key=GOOD_KEY)]


async def test_a_request_to_a_response_stream_is_checked_before_anything_is_sent(
    served: tuple[grpc.aio.Channel, _Recorder],
) -> None:
    channel, recorder = served
    call = _method(channel, "unary_stream", "ServerStream")(Request(idempotency_key=""))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        _ = [reply async for reply in call]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert recorder.seen == []


def test_nested_and_repeated_fields_are_named_by_dotted_path_and_index() -> None:
    request = identity_pb2.GetSecurityLogRequest(
        account_id="3f0c1d52-8a0e-4c11-9a55-0c2f3b7b1e01",
        page=common_pb2.PageRequest(page_size=501, page_token="t" * 513),
    )
    assert [field for field, _ in contracts.violations_of(request)] == [
        "page.page_size",
        "page.page_token",
    ]
    reset = identity_pb2.ForceCredentialResetRequest(reason="leak", account_ids=["", "nope"])
    assert contracts.violations_of(reset) == [
        ("account_ids[0]", "is required"),
        ("account_ids[1]", "must be a UUID"),
    ]


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("Line one\nline two\ttabbed", True),
        ("絵文字 🎉 and any script", True),
        ("a NUL \x00 byte", False),
        ("a C1 control \x85", False),
    ],
)
def test_free_text_keeps_line_breaks_and_refuses_other_control_characters(
    value: str, accepted: bool
) -> None:
    request = wallet_pb2.RefundPaymentRequest(
        payment_movement_id="3f0c1d52-8a0e-4c11-9a55-0c2f3b7b1e01",
        reason=value,
        idempotency_key=GOOD_KEY,
    )
    assert (contracts.violations_of(request) == []) is accepted


def test_money_rules_name_the_amount_and_currency_inside_the_field() -> None:
    request = wallet_pb2.TopUpFromPointsRequest(
        amount=common_pb2.Money(amount_minor=0, currency="USD"), idempotency_key=GOOD_KEY
    )
    assert contracts.violations_of(request) == [
        ("amount.amount_minor", "must be greater than 0"),
        ("amount.currency", "must be one of JPY"),
    ]
