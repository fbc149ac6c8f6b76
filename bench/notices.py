"""What a payment's notice costs: CPU and database transactions per notice, from the
wallet outbox's SendNotice to the mail on the SMTP server.

    python -m bench.notices                       # 1,500 notices at 50/s to 200 payers
    python -m bench.notices --count 600 --rate 50 --profile var/bench/profiles

The whole stack runs as `make run` starts it. The payers are seeded straight into
identity's database (the harness preparing data, as bench/system.py's ``seed_accounts``
does); the measured operation goes through the contracts only: this process calls
notify's SendNotice as the wallet does for each payment (a payment notice to a payer
ID) at a steady rate and waits until every message has reached the SMTP server. The
figures are the process CPU times of notify, identity and PostgreSQL and the
transactions committed in notify's and identity's databases over that window,
divided by the number of notices.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from mamoru.common.v1 import common_pb2
from mamoru.notify.v1 import notify_pb2, notify_pb2_grpc

from bench import profile
from bench.system import System, fetch_rows, seed_accounts, transactions_by_database
from tests.support.people import stack_channel

MEASURED = ("notify", "identity", "postgres")


def payment_notice(payer_id: str, number: int) -> notify_pb2.SendNoticeRequest:
    """The request the wallet's outbox relay sends for one captured payment."""
    movement = str(uuid.uuid4())
    return notify_pb2.SendNoticeRequest(
        payer_id=payer_id,
        kind=notify_pb2.NOTICE_KIND_PAYMENT,
        money=notify_pb2.MoneyParams(
            amount=common_pb2.Money(amount_minor=100 + number % 900, currency="JPY"),
            balance_after=common_pb2.Money(amount_minor=50_000, currency="JPY"),
            counterparty=f"店舗 {number % 1000}",
            movement_id=movement,
        ),
        idempotency_key=f"notice:{movement}",
    )


async def run_notices(
    system: System, *, payers: int, count: int, rate: float, profile_dir: Path | None
) -> dict[str, Any]:
    await seed_accounts(system, payers, prefix="notice", password="not-used-here-1")  # noqa: S106
    rows = await fetch_rows(
        system.database_url("identity"), "select payer_id from accounts order by payer_id"
    )
    payer_ids = [str(row["payer_id"]) for row in rows]
    notify = notify_pb2_grpc.NotifyServiceStub(stack_channel(system.stack, "notify", as_="wallet"))
    settled = await system.settle()
    print(f"    {len(payer_ids)} payers seeded; the system settled in {settled:.0f}s", flush=True)

    mail_before = len(system.smtp.messages)
    transactions_before = await transactions_by_database(system)
    meter = system.cpu_meter()
    meter.start()
    seconds = count / rate
    profiling = asyncio.create_task(
        profile.record(
            {name: pid for name, pid in system.pids().items() if name in MEASURED},
            profile_dir,
            "notices",
            delay=1,
            seconds=max(seconds - 2, 1),
        )
        if profile_dir is not None
        else asyncio.sleep(0)
    )
    started = time.monotonic()
    failures = 0
    pending: set[asyncio.Task[Any]] = set()

    async def send(number: int) -> None:
        nonlocal failures
        try:
            await notify.SendNotice(
                payment_notice(payer_ids[number % len(payer_ids)], number), timeout=30
            )
        except Exception:
            failures += 1

    for number in range(count):
        # A steady rate, as the payments arrive, not a burst.
        delay = started + number / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(number))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    accepted_in = time.monotonic() - started
    await system.smtp.wait_for(mail_before + count - failures, within=300)
    delivered_in = time.monotonic() - started
    await profiling
    meter.stop()
    transactions = await transactions_by_database(system)
    cpu = meter.per_operation_ms(count)
    return {
        "notices": count,
        "failed": failures,
        "rate_offered": rate,
        "accepted_seconds": round(accepted_in, 2),
        "delivered_seconds": round(delivered_in, 2),
        "cpu_ms_per_notice": {name: round(cpu.get(name, 0.0), 3) for name in MEASURED},
        "transactions_per_notice": {
            name: round((transactions.get(name, 0) - transactions_before.get(name, 0)) / count, 3)
            for name in ("notify", "identity")
        },
    }


async def main_async(args: argparse.Namespace) -> int:
    var_dir = Path(tempfile.mkdtemp(prefix="mamoru-bench-notices-"))
    system = System(var_dir)
    try:
        print("== starting the stack ==", flush=True)
        await system.start()
        print("== payment notices ==", flush=True)
        result = await run_notices(
            system,
            payers=args.payers,
            count=args.count,
            rate=args.rate,
            profile_dir=args.profile,
        )
    finally:
        await system.stop()
        shutil.rmtree(var_dir, ignore_errors=True)
    cpu, tx = result["cpu_ms_per_notice"], result["transactions_per_notice"]
    print(
        f"    {result['notices']:,} notices ({result['failed']} failed) offered at"
        f" {result['rate_offered']:g}/s; all mail on the SMTP server after"
        f" {result['delivered_seconds']:.1f}s",
        flush=True,
    )
    print(
        "    CPU per notice (ms): "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())
        + f"; total {sum(cpu.values()):.2f}",
        flush=True,
    )
    print(
        "    transactions per notice: " + ", ".join(f"{name} {n:.2f}" for name, n in tx.items()),
        flush=True,
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notices", description=__doc__)
    parser.add_argument("--payers", type=int, default=200)
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=50.0, help="notices offered per second")
    parser.add_argument("--profile", type=Path, help="py-spy notify, identity here")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
