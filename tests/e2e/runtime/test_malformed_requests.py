"""Every RPC of every service answers request bytes that do not decode with
INVALID_ARGUMENT and a generic message, never UNKNOWN with the parser's text.

The RPCs come from the descriptors of what each running service registers (its
own services, health and reflection), so a new RPC is fuzzed without anyone
listing it. Hypothesis builds the bytes: a valid prefix of unknown fields, then
one of the ways wire data goes wrong, kept only when the request message really
refuses to parse it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.harness import Cluster

EXAMPLES_PER_RPC = 4
GENERIC_MESSAGE = "the request could not be decoded"

_WIRE_VARINT, _WIRE_LENGTH = 0, 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


# Field numbers no request message uses, so the prefix decodes as unknown fields.
_unknown_field = st.integers(min_value=100_000, max_value=500_000)

_valid_prefix = st.lists(
    st.tuples(_unknown_field, st.integers(min_value=0, max_value=2**63)).map(
        lambda pair: _tag(pair[0], _WIRE_VARINT) + _varint(pair[1])
    ),
    max_size=3,
).map(b"".join)


def _string_fields(message: type[Message]) -> list[int]:
    return [
        field.number
        for field in message.DESCRIPTOR.fields
        if field.type == FieldDescriptor.TYPE_STRING
    ]


def malformed(message: type[Message]) -> st.SearchStrategy[bytes]:
    """Bytes that ``message`` refuses to parse."""
    field = st.integers(min_value=1, max_value=2**29 - 1)
    breakages = [
        # A varint whose continuation bit is set on the last byte of the message.
        st.tuples(field, st.binary(min_size=1, max_size=9)).map(
            lambda p: _tag(p[0], _WIRE_VARINT) + bytes(b | 0x80 for b in p[1])
        ),
        # An 11-byte varint: longer than any 64-bit value.
        field.map(lambda f: _tag(f, _WIRE_VARINT) + b"\xff" * 10 + b"\x01"),
        # A length-delimited field claiming more bytes than follow.
        st.tuples(field, st.integers(min_value=1, max_value=2**20), st.binary(max_size=8)).map(
            lambda p: _tag(p[0], _WIRE_LENGTH) + _varint(p[1] + len(p[2])) + p[2][:-1]
        ),
        # Wire types 6 and 7 do not exist; 4 ends a group that never started.
        st.tuples(field, st.sampled_from([4, 6, 7])).map(lambda p: _tag(p[0], p[1])),
        # Field number zero is reserved.
        st.sampled_from([0, 1, 2, 5]).map(lambda wire_type: bytes([wire_type]) + b"\x00" * 8),
    ]
    strings = _string_fields(message)
    if strings:
        # A string field that is not UTF-8.
        breakages.append(
            st.tuples(
                st.sampled_from(strings),
                st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88"]),
                st.text(max_size=5).map(str.encode),
            ).map(lambda p: _tag(p[0], _WIRE_LENGTH) + _varint(len(p[2] + p[1])) + p[2] + p[1])
        )
    return st.tuples(_valid_prefix, st.one_of(breakages)).map(lambda p: p[0] + p[1])


def _refuses(message: type[Message], payload: bytes) -> bool:
    try:
        message.FromString(payload)
    except DecodeError:
        return True
    return False


@dataclass(frozen=True)
class Rpc:
    service: str
    path: str
    method: MethodDescriptor

    @property
    def request(self) -> type[Message]:
        return GetMessageClass(self.method.input_type)


def registered_rpcs(cluster: Cluster) -> list[Rpc]:
    """Every method every running service serves, from the descriptors it registered."""
    pool = descriptor_pool.Default()
    shared = [
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    rpcs: list[Rpc] = []
    for name, running in cluster.running.items():
        for full_name in [*running.app.service_names, *shared]:
            service = pool.FindServiceByName(full_name)
            rpcs.extend(
                Rpc(name, f"/{service.full_name}/{method.name}", method)
                for method in service.methods
            )
    return rpcs


async def _send(channel: grpc.aio.Channel, rpc: Rpc, payload: bytes) -> tuple[Any, str]:
    """Send raw bytes as ``rpc``'s request; the status code and details it ends with."""
    method = rpc.method
    raw: dict[str, Any] = {"request_serializer": None, "response_deserializer": None}
    if method.client_streaming and method.server_streaming:
        call: Any = channel.stream_stream(rpc.path, **raw)(iter([payload]), timeout=10)
    elif method.client_streaming:
        call = channel.stream_unary(rpc.path, **raw)(iter([payload]), timeout=10)
    elif method.server_streaming:
        call = channel.unary_stream(rpc.path, **raw)(payload, timeout=10)
    else:
        call = channel.unary_unary(rpc.path, **raw)(payload, timeout=10)
    return await call.code(), await call.details()


def _fuzz(
    rpc: Rpc,
    send: Callable[[bytes], tuple[Any, str]],
) -> None:
    request = rpc.request

    @settings(
        max_examples=EXAMPLES_PER_RPC,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(malformed(request))
    def answers_invalid_argument(payload: bytes) -> None:
        assume(_refuses(request, payload))
        code, details = send(payload)
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, GENERIC_MESSAGE), (
            rpc.path,
            payload,
        )

    answers_invalid_argument()


# Hypothesis draws in a thread while the servers, on the event loop, use the global
# random module for their own jitter; it mistakes that for the strategy's doing.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
async def test_every_rpc_answers_undecodable_bytes_with_invalid_argument(cluster: Cluster):
    await cluster.start("risk", "notify", "identity", "wallet")
    rpcs = registered_rpcs(cluster)
    assert len({rpc.service for rpc in rpcs}) == 4
    assert any(rpc.method.server_streaming for rpc in rpcs)
    assert any(rpc.method.client_streaming for rpc in rpcs)
    channels = {name: cluster.channel(name, as_="operator") for name in cluster.running}
    loop = asyncio.get_running_loop()

    def fuzz_all() -> None:
        # Hypothesis drives synchronously from this thread; the calls run on the
        # test's event loop, where the servers and channels live.
        for rpc in rpcs:

            def send(payload: bytes, rpc: Rpc = rpc) -> tuple[Any, str]:
                future = asyncio.run_coroutine_threadsafe(
                    _send(channels[rpc.service], rpc, payload), loop
                )
                return future.result(timeout=30)

            _fuzz(rpc, send)

    await asyncio.to_thread(fuzz_all)


async def test_a_malformed_message_later_in_a_request_stream_is_refused(cluster: Cluster):
    from grpc_reflection.v1alpha import reflection_pb2

    await cluster.start("risk")
    channel = cluster.channel("risk", as_="operator")
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    bad = _tag(1, _WIRE_LENGTH) + _varint(5) + b"\xff\xfe"
    call = channel.stream_stream(
        f"/{reflection.SERVICE_NAME}/ServerReflectionInfo",
        request_serializer=None,
        response_deserializer=None,
    )(iter([good, bad]), timeout=10)

    answered = []
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for response in call:
            answered.append(response)
    assert len(answered) == 1
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == GENERIC_MESSAGE
    status = rpc_status.from_call(refused.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "MALFORMED_REQUEST"
