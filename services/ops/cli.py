"""The operator CLI (`mamoru`): policies, alerts, cases and victim queries through risk's gRPC API.

    mamoru policy show
    mamoru policy set top_up_channel card on --reason "card testing wave"
    mamoru policy set country KP on --reason "foreign IP surge"
    mamoru policy set payments_suspended on --reason "spend spike"
    mamoru policy set payment_fallback_limit 3000 --reason "smaller offline risk"
    mamoru policy set network 203.0.113.0/24 on --reason "stuffing from a rented block"
    mamoru policy lift-containment --reason "the wave's networks are a mobile carrier's"
    mamoru policy history
    mamoru alerts [--status open]
    mamoru cases [--status open]
    mamoru victims --case CASE_ID
    mamoru victims --ip 203.0.113.7 --subnet 198.51.100.0/24 --device D --since 2025-01-01T00:00Z
    mamoru mail [--to ADDRESS] [--limit N] [--full]     the local mailbox of `make run`
    mamoru demo totp                                    the demo person's authenticator code
    mamoru demo show [FIELD]                            the demo `make run` seeded

It connects with the ``operator`` certificate from MAMORU_TLS_DIR (default
$MAMORU_VAR/tls) to RISK_ADDRESS (default 127.0.0.1:$RISK_GRPC_PORT, 50053) and
sends the person's name (--operator, default $USER) so the audit trail shows who
acted. Output is JSON. ``mail`` and ``demo`` read the local files of `make run`
under MAMORU_VAR (default var).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2, risk_pb2_grpc

from services.runtime.tls import load_tls, secure_channel

TIMEOUT_SECONDS = 30.0
_ON_OFF = {"on": True, "off": False}

# Every switch of `policy set`: the values it takes, and an example. A switch is
# undone by the same command with `off` (or the previous amount).
SWITCHES = {
    "country": ("CC on|off", "block sign-ins, sign-ups and top-ups from a country", "KP on"),
    "network": (
        "CIDR on|off",
        "block sign-ins, sign-ups and top-ups from a network",
        "203.0.113.0/24 on",
    ),
    "registration_suspended": ("on|off", "stop new sign-ups", "on"),
    "external_login": ("PROVIDER on|off", "stop sign-in with an external ID", "line on"),
    "top_up_channel": (
        "card|bank|cash_register|atm|points on|off",
        "stop top-ups through one channel",
        "card on",
    ),
    "payments_suspended": ("on|off", "stop store payments", "on"),
    "wind_down": ("on|off", "end top-ups and pay out balances", "on"),
    "payment_fallback_limit": (
        "YEN",
        "largest payment allowed while risk cannot answer",
        "3000",
    ),
}


def _switches_help() -> str:
    lines = ["switches (undo any of them with the same command and `off`):"]
    for name, (values, meaning, _) in SWITCHES.items():
        lines.append(f"  {name:<24} {values:<42} {meaning}")
    lines.append("")
    lines.append("examples:")
    for name, (_, _, example) in SWITCHES.items():
        lines.append(f'  mamoru policy set {name} {example} --reason "why"')
    lines.append('  mamoru policy set top_up_channel card off --reason "wave over"   (undo)')
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mamoru", description=__doc__.split("\n\n")[0])
    parser.add_argument("--operator", default=None, help="your name, for the audit trail")
    commands = parser.add_subparsers(dest="command", required=True)

    policy = commands.add_parser("policy", help="show or change kill switches")
    policy_commands = policy.add_subparsers(dest="action", required=True)
    policy_commands.add_parser("show", help="the current policy")
    policy_commands.add_parser("history", help="who changed what, when and why")
    setter = policy_commands.add_parser(
        "set",
        help="flip one switch",
        epilog=_switches_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    setter.add_argument("switch", choices=list(SWITCHES), metavar="SWITCH")
    setter.add_argument("values", nargs="+", help="[key] on|off, or an amount in JPY")
    setter.add_argument("--reason", required=True, help="why (recorded)")
    lifter = policy_commands.add_parser(
        "lift-containment",
        help="lift the containment risk raised by itself during a stuffing wave",
        description="Sign-ins from the contained networks are assessed as usual again. "
        "Risk does not contain again for the same alert; a new alert may.",
    )
    lifter.add_argument("--reason", required=True, help="why (recorded)")

    for name in ("alerts", "cases"):
        lister = commands.add_parser(name, help=f"list {name}")
        lister.add_argument("--status", default="", help="only this state, e.g. open")
        lister.add_argument("--limit", type=int, default=50)

    victims = commands.add_parser("victims", help="accounts and money reached by indicators")
    victims.add_argument("--case", default="", help="a confirmed case")
    victims.add_argument("--ip", action="append", default=[])
    victims.add_argument("--subnet", action="append", default=[])
    victims.add_argument("--device", action="append", default=[])
    victims.add_argument("--since", default="", help="ISO 8601 start of the window")
    victims.add_argument("--until", default="", help="ISO 8601 end of the window (default now)")
    mail = commands.add_parser("mail", help="the local mailbox, decoded, newest first")
    mail.add_argument("--to", default="", help="only mail to this address")
    mail.add_argument("--limit", type=int, default=10, help="messages shown in full")
    mail.add_argument("--full", action="store_true", help="whole bodies, not the first lines")

    demo = commands.add_parser("demo", help="the demo person and merchant of `make run`")
    demo_commands = demo.add_subparsers(dest="action", required=True)
    demo_commands.add_parser("totp", help="a fresh code of the demo person's authenticator app")
    shower = demo_commands.add_parser("show", help="the demo, or one field of it")
    shower.add_argument("field", nargs="?", default="", help="e.g. merchant.merchant_key")
    return parser


def _var() -> Path:
    return Path(os.environ.get("MAMORU_VAR", "var"))


def local_command(args: argparse.Namespace, out: TextIO) -> int:
    """``mail`` and ``demo``: read `make run`'s files, no server involved."""
    # Imported here: they read the local stack's files, and the production image
    # ships the operator commands without services.devstack.
    from services.devstack import demo as local_demo
    from services.devstack.mailbox_view import read_mailbox, render

    if args.command == "mail":
        mails = read_mailbox(_var() / "mail")
        if args.to:
            mails = [m for m in mails if args.to.lower() in m.to.lower()]
        print(render(mails, limit=args.limit, full=args.full), file=out)
        return 0
    if local_demo.Demo.load(_var()) is None:
        raise UsageError(f"no demo in {_var()}: start `make run` once first")
    if args.action == "totp":
        code, valid_for = local_demo.take_totp_code(_var())
        print(code, file=out)
        print(f"(valid for about {valid_for:.0f} s; each code works once)", file=sys.stderr)
        return 0
    value: Any = json.loads(local_demo.Demo.path(_var()).read_text())
    for part in filter(None, args.field.split(".")):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise UsageError(f"the demo has no field {args.field!r}")
    print(value if isinstance(value, str | int) else json.dumps(value, indent=2), file=out)
    return 0


class UsageError(Exception):
    pass


def _stamp(text: str, what: str) -> timestamp_pb2.Timestamp:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{what} must be an ISO 8601 time, got {text!r}") from None
    if moment.tzinfo is None:
        raise UsageError(f"{what} must carry a time zone (for example Z or +09:00)")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _on_off(value: str) -> bool:
    if value not in _ON_OFF:
        raise UsageError(f"expected on or off, got {value!r}")
    return _ON_OFF[value]


def set_policy_request(
    switch: str, values: Sequence[str], reason: str
) -> risk_pb2.SetPolicyRequest:
    request = risk_pb2.SetPolicyRequest(reason=reason)
    keyed = switch in ("country", "network", "external_login", "top_up_channel")
    expected = 2 if keyed else 1
    if len(values) != expected:
        raise UsageError(f"{switch} takes {'a key and ' if keyed else ''}one value")
    if switch == "country":
        request.country.CopyFrom(
            risk_pb2.CountryChange(country_code=values[0].upper(), blocked=_on_off(values[1]))
        )
    elif switch == "network":
        request.network.CopyFrom(
            risk_pb2.NetworkChange(network=values[0], blocked=_on_off(values[1]))
        )
    elif switch == "external_login":
        request.external_login.CopyFrom(
            risk_pb2.ExternalLoginChange(provider=values[0], suspended=_on_off(values[1]))
        )
    elif switch == "top_up_channel":
        try:
            channel = risk_pb2.TopUpChannel.Value(f"TOP_UP_CHANNEL_{values[0].upper()}")
        except ValueError:
            raise UsageError("channel must be card, bank, cash_register, atm or points") from None
        request.top_up_channel.CopyFrom(
            risk_pb2.TopUpChannelChange(channel=channel, suspended=_on_off(values[1]))
        )
    elif switch == "payment_fallback_limit":
        if not values[0].isdigit():
            raise UsageError("the limit is a whole number of yen")
        request.payment_fallback_limit.CopyFrom(
            common_pb2.Money(amount_minor=int(values[0]), currency="JPY")
        )
    else:
        setattr(request, switch, _on_off(values[0]))
    return request


def _status(enum: Any, prefix: str, text: str) -> Any:
    if not text:
        return 0
    try:
        return enum.Value(f"{prefix}{text.upper()}")
    except ValueError:
        raise UsageError(f"unknown status {text!r}") from None


async def run(
    argv: Sequence[str], *, address: str, tls_dir: Path, as_: str = "operator", out: TextIO
) -> int:
    """Run one command; returns the exit code (0 ok, 1 refused by the server, 2 usage)."""
    args = _parser().parse_args(argv)
    if args.command in ("mail", "demo"):
        try:
            return local_command(args, out)
        except UsageError as error:
            print(f"mamoru: {error}", file=sys.stderr)
            return 2
    operator = args.operator or os.environ.get("USER") or getpass.getuser()
    metadata = (("x-operator", operator),)
    try:
        request: Message
        async with secure_channel(address, load_tls(tls_dir, as_), server_name="risk") as channel:
            risk = risk_pb2_grpc.RiskServiceStub(channel)
            call: Any
            if args.command == "policy" and args.action == "show":
                call, request = risk.GetPolicies, risk_pb2.GetPoliciesRequest()
            elif args.command == "policy" and args.action == "history":
                call, request = risk.ListPolicyChanges, risk_pb2.ListPolicyChangesRequest()
            elif args.command == "policy" and args.action == "lift-containment":
                call = risk.SetPolicy
                request = risk_pb2.SetPolicyRequest(lift_containment=True, reason=args.reason)
            elif args.command == "policy":
                call = risk.SetPolicy
                request = set_policy_request(args.switch, args.values, args.reason)
            elif args.command == "alerts":
                call = risk.ListAlerts
                request = risk_pb2.ListAlertsRequest(
                    status=_status(risk_pb2.AlertStatus, "ALERT_STATUS_", args.status),
                    page=common_pb2.PageRequest(page_size=args.limit),
                )
            elif args.command == "cases":
                call = risk.ListCases
                request = risk_pb2.ListCasesRequest(
                    status=_status(risk_pb2.CaseStatus, "CASE_STATUS_", args.status),
                    page=common_pb2.PageRequest(page_size=args.limit),
                )
            else:
                call, request = risk.FindAffectedAccounts, _victims_request(args)
            reply = await call(request, metadata=metadata, timeout=TIMEOUT_SECONDS)
    except UsageError as error:
        print(f"mamoru: {error}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as error:
        print(f"mamoru: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(json_format.MessageToJson(reply, always_print_fields_with_no_presence=True), file=out)
    return 0


def _victims_request(args: argparse.Namespace) -> risk_pb2.FindAffectedAccountsRequest:
    if args.case:
        return risk_pb2.FindAffectedAccountsRequest(case_id=args.case)
    if not args.since:
        raise UsageError("give --case, or indicators with --since")
    indicators = risk_pb2.Indicators(
        ip_addresses=args.ip,
        subnets=args.subnet,
        device_ids=args.device,
        window_start=_stamp(args.since, "--since"),
    )
    if args.until:
        indicators.window_end.CopyFrom(_stamp(args.until, "--until"))
    return risk_pb2.FindAffectedAccountsRequest(indicators=indicators)


def main(argv: Sequence[str] | None = None) -> None:
    code = asyncio.run(
        run(
            sys.argv[1:] if argv is None else argv,
            address=os.environ.get("RISK_ADDRESS")
            or f"127.0.0.1:{os.environ.get('RISK_GRPC_PORT') or 50053}",
            tls_dir=Path(os.environ.get("MAMORU_TLS_DIR") or _var() / "tls"),
            as_=os.environ.get("MAMORU_AS", "operator"),
            out=sys.stdout,
        )
    )
    raise SystemExit(code)


if __name__ == "__main__":
    main()
