"""Call any Mamoru RPC from a terminal with JSON in and out, over mTLS.

    python -m services.devstack.call --help              services and their methods
    python -m services.devstack.call wallet --help       one service's methods, who may call each
    python -m services.devstack.call risk GetPolicies '{}'
    MAMORU_AS=gateway python -m services.devstack.call identity Login '{"identifier": ...}' \\
        --demo-phone
    MAMORU_AS=pos python -m services.devstack.call wallet CapturePayment '{...}' \\
        --merchant-key KEY

Options:
  --as PRINCIPAL       client certificate to present: operator (default), gateway, pos
                       or a service name; also MAMORU_AS
  --token TOKEN        bearer token for person-facing RPCs; also MAMORU_TOKEN
  --merchant-key KEY   a register's merchant key (x-merchant-key), for pos calls
  -H, --header K:V     any other metadata, repeatable
  --get PATH           print only this field of the reply (camelCase, dotted:
                       session.accessToken); nothing when the reply lacks it
  --device PEM         act as the device whose private key is in PEM: every request
                       with a deviceProof field gets a fresh proof, bound as identity
                       checks it (ExchangeToken: to --token)
  --demo-phone         act as the demo person's phone: --device $MAMORU_VAR/demo-device.pem

JSON field names are the camelCase of the contract (protos/), as in the replies.
Environment: MAMORU_TLS_DIR (default $MAMORU_VAR/tls, MAMORU_VAR defaulting to
var), <SERVICE>_ADDRESS (default 127.0.0.1:<SERVICE>_GRPC_PORT, which defaults
to the `make run` port).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import error_details_pb2, status_pb2

from services.devstack import demo
from services.devstack.stack import DEFAULT_PORTS
from services.runtime.access import Access
from services.runtime.device_proof import BEARER, BOUND_TO, DeviceKey
from services.runtime.tls import load_tls, secure_channel

SERVICE_NAMES = tuple(DEFAULT_PORTS)
_STATUS_DETAILS = "grpc-status-details-bin"


class UsageError(Exception):
    pass


def service_descriptor(service: str) -> ServiceDescriptor:
    if service not in SERVICE_NAMES:
        raise UsageError(f"unknown service {service!r}; there are: {', '.join(SERVICE_NAMES)}")
    module = importlib.import_module(f"mamoru.{service}.v1.{service}_pb2")
    descriptor: ServiceDescriptor = module.DESCRIPTOR.services_by_name[
        f"{service.capitalize()}Service"
    ]
    return descriptor


def access_table(service: str) -> dict[str, Access]:
    """The service's own allow-lists: who may call each RPC, with which token."""
    table: dict[str, Access] = importlib.import_module(f"services.{service}.access").ACCESS
    return table


def describe_access(access: Access | None) -> str:
    if access is None:
        return "closed to every caller"
    who = ", ".join(sorted(access.callers))
    if access.audiences:
        return f"as {who}, with a token ({'/'.join(sorted(access.audiences))})"
    return f"as {who}"


def methods_help(service: str) -> str:
    descriptor = service_descriptor(service)
    table = access_table(service)
    lines = [f"{service} ({descriptor.full_name}) methods, and who may call them:"]
    for name in sorted(descriptor.methods_by_name):
        method = descriptor.methods_by_name[name]
        stream = " (stream)" if method.server_streaming else ""
        lines.append(f"  {name + stream:<34} {describe_access(table.get(name))}")
    return "\n".join(lines)


def full_help() -> str:
    lines = [__doc__.strip(), "", "Services and their methods:"]
    for service in SERVICE_NAMES:
        names = sorted(service_descriptor(service).methods_by_name)
        lines.append(f"  {service}: {', '.join(names)}")
    lines.append("")
    lines.append("`call SERVICE --help` says who may call each method (MAMORU_AS=...).")
    return "\n".join(lines)


def camel_path(path: str) -> str:
    """``client.ip_address`` as the JSON input spells it: ``client.ipAddress``."""
    return re.sub(r"_([a-z0-9])", lambda match: match.group(1).upper(), path)


def explain_error(error: grpc.aio.AioRpcError, *, service: str, method: str, as_: str) -> str:
    """The status, its field violations in camelCase, its reason, and who may call."""
    code = error.code()
    lines = [f"{code.name}: {error.details()}"]
    status = _status(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            lines = [f"{code.name}:"] + [
                f"  {camel_path(v.field)}: {v.description}" for v in bad.field_violations
            ]
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            extra = "".join(f" {k}={v}" for k, v in sorted(info.metadata.items()))
            lines.append(f"  reason: {info.reason}{extra}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        access = access_table(service).get(method)
        if access is not None and as_ not in access.callers:
            allowed = sorted(access.callers)
            lines.append(
                f"  {service}.{method} is open to {', '.join(allowed)}, not to {as_}:"
                f" call it with MAMORU_AS={allowed[0]} (or --as {allowed[0]})"
            )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        access = access_table(service).get(method)
        if access is not None and access.audiences:
            lines.append(
                "  this method needs a bearer token: MAMORU_TOKEN=... (or --token), audience "
                + " or ".join(sorted(access.audiences))
            )
    return "\n".join(lines)


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():
        if key == _STATUS_DETAILS and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def pick(reply: dict[str, Any], path: str) -> str:
    """The field at a dotted camelCase path, as text (JSON for messages and lists)."""
    value: Any = reply
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return ""
        value = value[part]
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _address(service: str) -> str:
    configured = os.environ.get(f"{service.upper()}_ADDRESS")
    if configured:
        return configured
    port = os.environ.get(f"{service.upper()}_GRPC_PORT") or str(DEFAULT_PORTS[service][0])
    return f"127.0.0.1:{port}"


def _tls_dir() -> Path:
    configured = os.environ.get("MAMORU_TLS_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("MAMORU_VAR", "var")) / "tls"


def argument_parser() -> argparse.ArgumentParser:
    """The command line of the call tool (``parse_known_args``: unknown options are refused)."""
    parser = argparse.ArgumentParser(prog="call", add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--as", dest="as_", default=os.environ.get("MAMORU_AS", "operator"))
    parser.add_argument("--token", default=os.environ.get("MAMORU_TOKEN", ""))
    parser.add_argument("--merchant-key", default="")
    parser.add_argument("-H", "--header", action="append", default=[])
    parser.add_argument("--get", default="")
    parser.add_argument("--device", default="")
    parser.add_argument("--demo-phone", action="store_true")
    parser.add_argument("service", nargs="?")
    parser.add_argument("method", nargs="?")
    parser.add_argument("body", nargs="?", default="{}")
    return parser


def _var() -> Path:
    return Path(os.environ.get("MAMORU_VAR", "var"))


def _device(args: argparse.Namespace) -> DeviceKey | None:
    """The key to sign proofs with, if the caller acts as a device."""
    if args.device and args.demo_phone:
        raise UsageError("--device and --demo-phone both name a device; give one")
    try:
        if args.demo_phone:
            return demo.load_device_key(_var())
        if args.device:
            return DeviceKey.from_private_pem(Path(args.device).read_bytes())
    except (OSError, ValueError) as error:
        raise UsageError(f"no device key: {error}") from None
    return None


def sign_as_device(
    request: Any, method: str, device: DeviceKey | None, *, bearer_token: str
) -> None:
    """Fill ``device_proof`` with a fresh proof by ``device``, unless the JSON gave one."""
    if device is None or "device_proof" not in request.DESCRIPTOR.fields_by_name:
        return
    if request.device_proof:
        return
    if method not in BOUND_TO:
        raise UsageError(f"{method} takes a device proof, but what it binds is not known")
    if BOUND_TO[method] == BEARER and not bearer_token:
        raise UsageError(f"{method}'s device proof is bound to the bearer token: give --token")
    request.device_proof = device.prove(method, request, bearer_token=bearer_token)


def request_metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The call metadata the parsed ``args`` send: token, merchant key and any ``-H`` header."""
    metadata = []
    if args.token:
        metadata.append(("authorization", f"Bearer {args.token}"))
    if args.merchant_key:
        metadata.append(("x-merchant-key", args.merchant_key))
    for header in args.header:
        key, colon, value = header.partition(":")
        if not colon or not key.strip():
            raise UsageError(f"a header is key:value, got {header!r}")
        metadata.append((key.strip().lower(), value.strip()))
    return metadata


async def call(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run one call; 0 ok, 1 refused by the server, 2 usage."""
    args, unknown = argument_parser().parse_known_args(argv)
    try:
        if unknown:
            raise UsageError(f"unknown option {' '.join(unknown)}; see --help")
        if args.help:
            print(methods_help(args.service) if args.service else full_help(), file=out)
            return 0
        if not args.service or not args.method:
            raise UsageError("give a service and a method; see --help")
        descriptor = service_descriptor(args.service)
        rpc = descriptor.methods_by_name.get(args.method)
        if rpc is None:
            names = ", ".join(sorted(descriptor.methods_by_name))
            raise UsageError(f"unknown method {args.method!r}; {args.service} has: {names}")
        request_cls: Any = message_factory.GetMessageClass(rpc.input_type)
        response_cls: Any = message_factory.GetMessageClass(rpc.output_type)
        try:
            request = json_format.Parse(args.body, request_cls())
        except json_format.ParseError as error:
            raise UsageError(f"the JSON does not fit {rpc.input_type.name}: {error}") from None
        metadata = request_metadata(args)
        sign_as_device(request, args.method, _device(args), bearer_token=args.token)
    except UsageError as error:
        print(f"call: {error}", file=err)
        return 2
    tls = load_tls(_tls_dir(), args.as_)
    path = f"/{descriptor.full_name}/{args.method}"
    async with secure_channel(_address(args.service), tls, server_name=args.service) as channel:
        try:
            if rpc.server_streaming:
                stream = channel.unary_stream(
                    path,
                    request_serializer=request_cls.SerializeToString,
                    response_deserializer=response_cls.FromString,
                )(request, metadata=metadata)
                async for reply in stream:
                    print(json_format.MessageToJson(reply), file=out, flush=True)
                return 0
            reply = await channel.unary_unary(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )(request, metadata=metadata, timeout=30)
        except grpc.aio.AioRpcError as error:
            print(
                explain_error(error, service=args.service, method=args.method, as_=args.as_),
                file=err,
            )
            return 1
    if args.get:
        as_dict = json_format.MessageToDict(reply, always_print_fields_with_no_presence=True)
        print(pick(as_dict, args.get), file=out)
    else:
        print(json_format.MessageToJson(reply, always_print_fields_with_no_presence=True), file=out)
    return 0


def main() -> None:
    raise SystemExit(asyncio.run(call(sys.argv[1:])))


if __name__ == "__main__":
    main()
