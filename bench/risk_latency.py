"""Benchmark 3: risk's sign-in assessments at a fixed rate, as identity asks for them.

Each generator process is one identity replica's risk client: identity's own
``RiskClient``, presenting identity's certificate (the only caller risk's
sign-in assessments admit). It sends the attempts that arrive while earlier
ones are being answered together in one AssessLogins call, as identity does.
The attempts are a prepared mix: known and unknown accounts, known and new
devices, from many home networks. Each answer's latency is measured at the
caller, from the attempt's arrival to its verdict (its wait for a batch
included), which is what identity waits for before any password hash; an
attempt identity would treat as unanswered (risk refused it, failed it or ran
past identity's deadline) counts as failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog
from mamoru.risk.v1 import risk_pb2

from bench.load import START_DELAY_SECONDS, Endpoint, Progress, open_loop, run_generators
from bench.results import Samples
from bench.system import System
from services.identity.clients.risk import RiskClient
from services.identity.domain.login import RiskVerdict
from tests.support.people import client

# Identity's default IDENTITY_RISK_TIMEOUT_SECONDS: an answer later than this is one
# identity would not have waited for.
CALL_TIMEOUT = 0.5
REQUESTS = 20_000


@dataclass(frozen=True)
class AssessSpec:
    risk: Endpoint
    rate: float
    seconds: float
    start_at: float
    seed: int


@dataclass
class AssessRun:
    assessments: Samples = field(default_factory=Samples)
    skipped: int = 0
    cpu_seconds: float = 0.0


def _requests(seed: int) -> list[risk_pb2.AssessLoginRequest]:
    rng = random.Random(seed)  # noqa: S311 - shapes the load, not a secret
    accounts = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(5_000)]
    built = []
    for n in range(REQUESTS):
        known = rng.random() < 0.7
        account = rng.choice(accounts) if known else ""
        identifier = hashlib.sha256(f"{seed}-{n % 7_000}".encode()).hexdigest()
        network = rng.randrange(0x10000)
        built.append(
            risk_pb2.AssessLoginRequest(
                account_id=account,
                identifier_hash=identifier,
                client=client(
                    f"phone-{rng.randrange(3)}", f"2001:db8:{network:x}::{rng.randrange(1, 99)}"
                ),
                known_device=known and rng.random() < 0.9,
                method="password" if rng.random() < 0.9 else "passkey",
            )
        )
    return built


async def assess(spec: AssessSpec, progress: Progress) -> AssessRun:
    # The client logs a warning for each answer past its deadline; the run counts
    # those as unanswered, and printing thousands of lines would cost the
    # generator CPU it reports. Errors still print.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    run = AssessRun()
    channel = spec.risk.channel()
    await channel.channel_ready()
    risk = RiskClient(channel, timeout_seconds=CALL_TIMEOUT)
    requests = _requests(spec.seed)

    async def one(index: int, scheduled: float) -> None:
        request = requests[index % len(requests)]
        started = time.time()
        t0 = time.perf_counter()
        answer = await risk.assess_login(
            account_id=uuid.UUID(request.account_id) if request.account_id else None,
            identifier_hash=request.identifier_hash,
            client=request.client,
            known_device=request.known_device,
            method=request.method,
        )
        if answer.verdict is RiskVerdict.UNAVAILABLE:
            run.assessments.failed("unanswered (identity would fall back)")
            progress.failed()
            return
        run.assessments.ok(started - spec.start_at, (time.perf_counter() - t0) * 1000)
        progress.ok()

    cpu_at_start = time.process_time()
    run.skipped = await open_loop(
        rate=spec.rate,
        seconds=spec.seconds,
        start_at=spec.start_at,
        call=one,
        max_in_flight=512,
    )
    run.cpu_seconds = time.process_time() - cpu_at_start
    await channel.close()
    return run


async def run_risk(
    system: System, *, rate: float, seconds: float, processes: int
) -> dict[str, Any]:
    await system.settle()
    start_at = time.time() + START_DELAY_SECONDS
    specs = [
        AssessSpec(
            risk=system.endpoint("risk", "identity"),
            rate=rate / processes,
            seconds=seconds,
            start_at=start_at,
            seed=p,
        )
        for p in range(processes)
    ]
    meter = system.cpu_meter()
    meter.start()
    profiling = asyncio.create_task(system.profiled("risk", seconds))
    runs = await run_generators(assess, specs, label="risk", seconds=seconds)
    await profiling
    meter.stop()
    samples = Samples.merged(r.assessments for r in runs)
    return {
        "offered_per_second": rate,
        "seconds": seconds,
        "generator_processes": processes,
        "skipped_for_in_flight_cap": sum(r.skipped for r in runs),
        **samples.summary(seconds),
        "cpu_ms_per_assessment": {
            **meter.per_operation_ms(samples.count),
            "load generators": sum(r.cpu_seconds for r in runs) * 1000 / max(samples.count, 1),
        },
        "series": {"AssessLogin": samples.over_time()},
    }
