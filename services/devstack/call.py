"""Call any Mamoru RPC from a terminal with JSON in and out, over mTLS.

    python -m services.devstack.call risk GetPolicies '{}'
    python -m services.devstack.call identity GetRegisteredContacts '{"accountId": "..."}'

Options through the environment: MAMORU_TLS_DIR (default var/tls), MAMORU_AS
(the client certificate to use: operator, gateway, pos or a service; default
operator), <SERVICE>_ADDRESS (default the `make run` port), MAMORU_TOKEN (a
bearer token for person-facing RPCs).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, message_factory

from services.devstack.stack import DEFAULT_PORTS
from services.runtime.pki import load_tls, secure_channel


async def call(service: str, method: str, body: str) -> int:
    module = importlib.import_module(f"mamoru.{service}.v1.{service}_pb2")
    descriptor = module.DESCRIPTOR.services_by_name[f"{service.capitalize()}Service"]
    rpc = descriptor.methods_by_name.get(method)
    if rpc is None:
        names = ", ".join(sorted(descriptor.methods_by_name))
        print(f"unknown method {method!r}; {service} has: {names}", file=sys.stderr)
        return 2
    request_cls: Any = message_factory.GetMessageClass(rpc.input_type)
    response_cls: Any = message_factory.GetMessageClass(rpc.output_type)
    request = json_format.Parse(body, request_cls())
    address = os.environ.get(f"{service.upper()}_ADDRESS", f"127.0.0.1:{DEFAULT_PORTS[service][0]}")
    tls = load_tls(
        Path(os.environ.get("MAMORU_TLS_DIR", "var/tls")), os.environ.get("MAMORU_AS", "operator")
    )
    metadata = []
    if token := os.environ.get("MAMORU_TOKEN"):
        metadata.append(("authorization", f"Bearer {token}"))
    path = f"/{descriptor.full_name}/{method}"
    async with secure_channel(address, tls, server_name=service) as channel:
        try:
            if rpc.server_streaming:
                stream = channel.unary_stream(
                    path,
                    request_serializer=request_cls.SerializeToString,
                    response_deserializer=response_cls.FromString,
                )(request, metadata=metadata)
                async for reply in stream:
                    print(json_format.MessageToJson(reply), flush=True)
            else:
                reply = await channel.unary_unary(
                    path,
                    request_serializer=request_cls.SerializeToString,
                    response_deserializer=response_cls.FromString,
                )(request, metadata=metadata, timeout=30)
                print(json_format.MessageToJson(reply, always_print_fields_with_no_presence=True))
        except grpc.aio.AioRpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0


def main() -> None:
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    service, method = sys.argv[1], sys.argv[2]
    body = sys.argv[3] if len(sys.argv) == 4 else "{}"
    raise SystemExit(asyncio.run(call(service, method, body)))


if __name__ == "__main__":
    main()
