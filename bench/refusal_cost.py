"""CPU across the system of a password attempt identity refuses before any hash.

``python -m bench.refusal_cost`` starts the local stack (as ``python -m bench`` does),
has risk block a country, and sends sign-in attempts from that country's addresses
without a device proof, as a stuffing list's are sent: each is refused before any
hash. It then sends wrong passwords from an address nobody blocks, which are hashed.
The figures are each process's CPU time (user + system, from the kernel) over the
attempts divided by their number: the services and PostgreSQL ("system"), and this
process, which only sends (left out of the system's total).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from mamoru.identity.v1 import identity_pb2 as pb
from mamoru.risk.v1 import risk_pb2
from prometheus_client.parser import text_string_to_metric_families

from bench.system import System
from services.runtime.countries import bundled_lookup
from tests.support.people import client

HARNESS = "harness (smtp, card sandbox)"
BLOCKED_COUNTRY = "US"
LEAKED_PASSWORD = "sakura-2019-summer!"  # noqa: S105 - a leaked list's, on purpose


def addresses_in(country: str, count: int, seed: int = 13) -> list[str]:
    rng = random.Random(seed)  # noqa: S311 - shapes the load, not a secret
    found: list[str] = []
    while len(found) < count:
        address = ipaddress.IPv4Address(rng.randrange(1 << 32))
        if address.is_global and bundled_lookup(str(address)) == country:
            found.append(str(address))
    return found


async def refused_total(system: System) -> float:
    port = system.stack.processes["identity"].metrics_port
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as reply,
    ):
        text = await reply.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mamoru_identity_refused_without_hash_total"
    )


async def attempts(stub: Any, requests: list[pb.LoginRequest], in_flight: int) -> int:
    queue = iter(requests)
    answered = 0

    async def worker() -> None:
        nonlocal answered
        for request in queue:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Login(request, timeout=30)
            answered += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return answered


def login(identifier: str, ip: str, n: int) -> pb.LoginRequest:
    return pb.LoginRequest(
        identifier=identifier, password=LEAKED_PASSWORD, client=client(f"bot-{n}", ip)
    )


async def measure(
    system: System, label: str, requests: list[pb.LoginRequest], profile: Path | None = None
) -> None:
    await system.settle()
    meter = system.cpu_meter()
    meter.start()
    started = time.monotonic()
    sampler = None
    if profile is not None:
        # Identity's stacks while it answers (py-spy's raw format, for flamegraph.pl).
        py_spy = Path(sys.executable).with_name("py-spy")
        sampler = await asyncio.create_subprocess_exec(
            str(py_spy), "record", "--nonblocking", "-p", str(system.pids()["identity"]),
            "-f", "raw", "-o", str(profile), "-r", "200",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    answered = await attempts(system.identity.stub, requests, in_flight=16)
    elapsed = time.monotonic() - started
    meter.stop()
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)
        await sampler.wait()
    per = meter.per_operation_ms(answered)
    system_ms = per["total"] - per.get(HARNESS, 0.0)
    parts = ", ".join(
        f"{name} {ms:.3f}" for name, ms in per.items() if name not in (HARNESS, "total")
    )
    print(
        f"{label}: {answered} attempts in {elapsed:.1f}s; CPU per attempt {system_ms:.3f} ms "
        f"across the system ({parts}); sender {per.get(HARNESS, 0.0):.3f} ms",
        flush=True,
    )


async def run(count: int, hashed: int, profile: Path | None) -> None:
    var_dir = Path(tempfile.mkdtemp(prefix="mamoru-refusal-"))
    system = System(var_dir)
    try:
        await system.start()
        await system.risk_operator.SetPolicy(
            risk_pb2.SetPolicyRequest(
                country=risk_pb2.CountryChange(country_code=BLOCKED_COUNTRY, blocked=True),
                reason="refusal cost",
            ),
            timeout=30,
        )
        blocked = addresses_in(BLOCKED_COUNTRY, 256)
        # Until identity refuses the country's attempts (the policy has reached it).
        before = await refused_total(system)
        probe = 0
        while await refused_total(system) == before:
            probe += 1
            await attempts(system.identity.stub, [login("probe@example.jp", blocked[0], probe)], 1)
        refused = [
            login(f"leaked-{n}@example.jp", blocked[n % len(blocked)], n) for n in range(count)
        ]
        await measure(system, "refused (blocked country, no proof)", refused, profile)
        allowed = addresses_in("JP", 256)
        wrong = [
            login(f"leaked-{n}@example.jp", allowed[n % len(allowed)], n) for n in range(hashed)
        ]
        await measure(system, "hashed (unknown identifier, wrong password)", wrong)
    finally:
        await system.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.refusal_cost", description=__doc__)
    parser.add_argument("--count", type=int, default=3000, help="refused attempts to send")
    parser.add_argument("--hashed", type=int, default=200, help="hashed attempts to send")
    parser.add_argument(
        "--reports-per-second",
        type=float,
        default=None,
        help="IDENTITY_REFUSAL_REPORTS_PER_SECOND for the stack (0: no refusal reaches risk)",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy identity's refusals into this file"
    )
    args = parser.parse_args()
    if args.reports_per_second is not None:
        os.environ["IDENTITY_REFUSAL_REPORTS_PER_SECOND"] = str(args.reports_per_second)
    asyncio.run(run(args.count, args.hashed, args.profile))


if __name__ == "__main__":
    main()
