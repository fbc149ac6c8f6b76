"""`make bench` / `make bench-quick`: start the system as `make run` does and
measure the targets of docs/architecture.md on this machine.

    python -m bench --size quick            # about three minutes on two cores
    python -m bench --size full             # the sizes of the incident
    python -m bench --size quick --only payments,risk
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench import chart, profile
from bench.forced_reset import run_forced_reset
from bench.payments import TOP_UP, open_stores, run_payments, velocity_limit
from bench.pgbench import run_pgbench
from bench.results import (
    Figure,
    at_least,
    at_most,
    at_most_with_bound,
    exactly_zero,
    machine,
    write_results,
)
from bench.risk_latency import run_risk
from bench.stuffing import run_stuffing
from bench.system import System, make_people

BENCHMARKS = ("payments", "stuffing", "risk", "reset")


@dataclass(frozen=True)
class Sizes:
    stores: int
    payers: int
    payment_seconds: float
    registers: int
    pgbench_scale: int
    pgbench_clients: int
    pgbench_seconds: int
    legit_people: int
    victims: int
    attack_rate: float
    legit_rate: float
    stuffing_seconds: float
    risk_rate: float
    risk_seconds: float
    reset_accounts: int
    processes: int = 2


SIZES = {
    # The harness itself, in a couple of minutes of `make test`.
    "smoke": Sizes(
        stores=10, payers=6, payment_seconds=3, registers=2, pgbench_scale=1,
        pgbench_clients=1, pgbench_seconds=2, legit_people=3, victims=100, attack_rate=40,
        legit_rate=2, stuffing_seconds=3, risk_rate=100, risk_seconds=3,
        reset_accounts=1_000, processes=1,
    ),
    "quick": Sizes(
        stores=1_000, payers=250, payment_seconds=15, registers=16, pgbench_scale=5,
        pgbench_clients=2, pgbench_seconds=10, legit_people=80, victims=5_000,
        attack_rate=1_000, legit_rate=5, stuffing_seconds=15, risk_rate=2_000,
        risk_seconds=10, reset_accounts=50_000,
    ),
    "full": Sizes(
        stores=21_000, payers=1_000, payment_seconds=60, registers=16, pgbench_scale=10,
        pgbench_clients=2, pgbench_seconds=30, legit_people=200, victims=100_000,
        attack_rate=1_000, legit_rate=10, stuffing_seconds=60, risk_rate=2_000,
        risk_seconds=30, reset_accounts=1_000_000,
    ),
}  # fmt: skip


def heading(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def show(figures: list[Figure]) -> None:
    for figure in figures:
        print(figure.line(), flush=True)


async def bench_payments(system: System, sizes: Sizes, results: dict[str, Any]) -> list[Figure]:
    heading("pgbench TPC-B-like on the same PostgreSQL")
    pgbench = await run_pgbench(
        system.stack.server_url,
        scale=sizes.pgbench_scale,
        clients=sizes.pgbench_clients,
        seconds=sizes.pgbench_seconds,
    )
    results["pgbench"] = pgbench
    print(f"    pgbench: {pgbench['tps']:,.0f} tps with {pgbench['clients']} clients", flush=True)

    heading("1. payments at one hot merchant, risk included")
    per_wallet, window = await velocity_limit(system)
    print(f"    risk allows {per_wallet} payments per wallet in {window:.0f}s", flush=True)
    _, merchant_key, store_ids = await open_stores(system, sizes.stores)
    payers = await make_people(system, sizes.payers, funded_with=TOP_UP, label="payers")
    payments = await run_payments(
        system,
        merchant_key=merchant_key,
        store_ids=store_ids,
        payers=payers,
        per_wallet=per_wallet,
        registers=sizes.registers,
        processes=sizes.processes,
        seconds=sizes.payment_seconds,
    )
    results["payments"] = payments
    rate, tps = payments["payments_per_second"], pgbench["tps"]
    capture = payments["capture"]
    reconcile = payments["reconcile"]
    print(
        f"    {capture['ok']:,} payments, {capture['errors']:,} failed"
        f" {capture['errors_by_reason'] or ''}; {payments['risk_payment_decisions']:,} risk"
        f" decisions; sale (code + capture) p99 {payments['sale']['p99_ms']:.1f} ms",
        flush=True,
    )
    cpu = payments["cpu_ms_per_payment"]
    print(
        "    CPU per payment (ms): " + ", ".join(f"{name} {ms:.1f}" for name, ms in cpu.items()),
        flush=True,
    )
    print(
        "    database transactions per payment: "
        + ", ".join(
            f"{name} {n:.1f}" for name, n in payments["database_transactions_per_payment"].items()
        ),
        flush=True,
    )
    if payments["wallets_used_up"]:
        print("    every wallet reached risk's velocity limit before the time was up", flush=True)
    system_cpu = sum(ms for name, ms in cpu.items() if name not in ("total", "load generators"))
    system_transactions = sum(payments["database_transactions_per_payment"].values())
    paid = capture["ok"]
    return [
        Figure(
            "payments assessed by risk",
            f"{payments['risk_payment_decisions']:,} decisions for {paid:,} payments",
            float(payments["every_payment_assessed"]),
            "every one",
            bool(payments["every_payment_assessed"]),
            1.0 if payments["every_payment_assessed"] else 0.0,
        ),
        Figure(
            "payers' notices at the SMTP server",
            f"{payments['payment_notices_delivered']:,} for {paid:,} payments",
            float(payments["every_payment_notified"]),
            "every one",
            bool(payments["every_payment_notified"]),
            1.0 if payments["every_payment_notified"] else 0.0,
        ),
        at_most_with_bound(
            "CPU per payment, whole system", f"{system_cpu:.1f} ms", system_cpu, 4, 8, "ms"
        ),
        at_most_with_bound(
            "database transactions per payment",
            f"{system_transactions:.1f}",
            system_transactions,
            6,
            10,
            "",
        ),
        at_least(
            "payments/s as a share of pgbench tps",
            f"{rate:,.0f}/s = {rate / tps:.2f} of {tps:,.0f} tps",
            rate / tps,
            0.30,
            ">= 0.30",
        ),
        at_most(
            "capture p99 latency",
            f"{capture['p99_ms']:.1f} ms"
            f" (p50 {capture['p50_ms']:.1f}, p95 {capture['p95_ms']:.1f})",
            capture["p99_ms"],
            25.0,
            "<= 25 ms",
        ),
        exactly_zero(
            "Reconcile differences", reconcile["differences"] + reconcile["unbalanced_entries"]
        )
        if reconcile["balanced"]
        else Figure("Reconcile", "not balanced", 1.0, "balanced", False, 1.0),
    ]


async def bench_stuffing(system: System, sizes: Sizes, results: dict[str, Any]) -> list[Figure]:
    heading("2. sign-ins under a credential-stuffing flood")
    people = await make_people(system, sizes.legit_people, label="people")
    stuffing = await run_stuffing(
        system,
        people=people,
        victims=sizes.victims,
        attack_rate=sizes.attack_rate,
        legit_rate=sizes.legit_rate,
        seconds=sizes.stuffing_seconds,
        attack_processes=sizes.processes,
    )
    results["stuffing"] = stuffing
    attack, legit, hashing = stuffing["attack"], stuffing["legitimate"], stuffing["hashing"]
    print(
        f"    attack: {attack['attempts']:,} attempts, {hashing['attacker_hashes']:,} reached a"
        f" password hash (risk let {hashing['attacker_hashes_let_through_by_risk']:,} through,"
        f" identity reported {hashing['attacker_hashes_reported_by_identity']:,}),"
        f" {hashing['attacker_cpu_seconds']:.1f} CPU-s hashing; legitimate"
        f" {hashing['legitimate_hashes']:,} ({hashing['legitimate_cpu_seconds']:.1f} CPU-s);"
        f" identity used {hashing['identity_cpu_seconds_total']:.1f} CPU-s in all",
        flush=True,
    )
    print(f"    risk verdicts on the attack: {attack['risk_verdicts']}", flush=True)
    used = hashing["cpu_seconds_by_part"]
    print(
        f"    CPU-s: {', '.join(f'{name} {seconds:.1f}' for name, seconds in used.items())};"
        f" attack generators {attack['generator_cpu_seconds']:.1f}"
        f" ({attack['generator_cpu_ms_per_attempt']:.2f} ms per attempt),"
        f" {attack['skipped_for_in_flight_cap']:,} attempts skipped at their in-flight cap",
        flush=True,
    )
    answered = attack["answered_per_second"]
    hashed_share = hashing["attacker_share_of_attempts_hashed"]
    all_hashing = hashing["attacker_cpu_seconds"] + hashing["legitimate_cpu_seconds"]
    attacker_cpu_share = hashing["attacker_cpu_seconds"] / all_hashing if all_hashing else 0.0
    return [
        at_least(
            "attack attempts answered (a refusal is an answer)",
            f"{answered:,.0f}/s of {attack['offered_per_second']:,.0f} offered",
            answered / attack["offered_per_second"],
            0.95,
            ">= 95%",
        ),
        at_most(
            "attacker attempts that reached a hash",
            f"{hashed_share:.1%} of {attack['attempts']:,}",
            hashed_share,
            0.05,
            "<= 5%",
        ),
        at_most(
            "attackers' share of hashing CPU",
            f"{attacker_cpu_share:.1%} of {all_hashing:.1f} CPU-s",
            attacker_cpu_share,
            0.10,
            "<= 10%",
        ),
        exactly_zero("takeovers", stuffing["takeovers"]),
        at_least(
            "legitimate sign-ins that succeed",
            f"{legit['success_rate']:.2%} of {legit['attempts']:,}",
            legit["success_rate"],
            0.99,
            ">= 99%",
        ),
        at_most(
            "legitimate sign-in p99 latency",
            f"{legit['p99_ms']:.0f} ms (p50 {legit['p50_ms']:.0f})",
            legit["p99_ms"],
            300.0,
            "<= 300 ms",
        ),
    ]


async def bench_risk(system: System, sizes: Sizes, results: dict[str, Any]) -> list[Figure]:
    heading("3. risk sign-in assessments, as identity asks for them (AssessLogins)")
    risk = await run_risk(
        system, rate=sizes.risk_rate, seconds=sizes.risk_seconds, processes=sizes.processes
    )
    results["risk"] = risk
    cpu = risk["cpu_ms_per_assessment"]
    risk_cpu = sum(ms for name, ms in cpu.items() if name.startswith(("risk", "postgres")))
    print(
        "    CPU per assessment (ms): " + ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items()),
        flush=True,
    )
    return [
        at_least(
            "sign-in assessments answered/s (load precondition)",
            f"{risk['per_second']:,.0f}/s of {risk['offered_per_second']:,.0f} offered",
            risk["per_second"] / risk["offered_per_second"],
            1.0 if sizes.risk_rate >= 2000 else 0.95,
            ">= 2,000/s" if sizes.risk_rate >= 2000 else "all offered",
        ),
        at_most(
            "sign-in assessment p99 latency",
            f"{risk['p99_ms']:.1f} ms (p50 {risk['p50_ms']:.1f})",
            risk["p99_ms"],
            5.0,
            "<= 5 ms",
        ),
        at_most(
            "CPU per sign-in assessment (risk + PostgreSQL)",
            f"{risk_cpu:.2f} ms",
            risk_cpu,
            0.4,
            "<= 0.4 ms",
        ),
    ]


async def bench_reset(system: System, sizes: Sizes, results: dict[str, Any]) -> list[Figure]:
    heading("4. forced credential reset")
    reset = await run_forced_reset(system, accounts=sizes.reset_accounts)
    results["forced_reset"] = reset
    rate = reset["accounts_per_second"]
    return [
        at_least(
            "forced reset rate vs 1M in 5 min",
            f"{reset['processed']:,} in {reset['seconds']:.1f}s = {rate:,.0f}/s",
            rate / reset["required_per_second"],
            1.0,
            ">= 3,334/s",
        ),
        Figure(
            "forced reset notices queued",
            f"{reset['notices_queued']:,} of {reset['accounts_in_job']:,}",
            float(reset["every_notice_queued"]),
            "every one",
            bool(reset["every_notice_queued"]),
            1.0 if reset["every_notice_queued"] else 0.0,
        ),
    ]


STEPS = {
    "payments": bench_payments,
    "stuffing": bench_stuffing,
    "risk": bench_risk,
    "reset": bench_reset,
}


async def run(
    size: str,
    sizes: Sizes,
    only: tuple[str, ...],
    out: Path,
    chart_path: Path,
    profile_dir: Path | None,
) -> int:
    started = time.monotonic()
    results: dict[str, Any] = {
        "size": size,
        "sizes": asdict(sizes),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
    }
    print(
        f"Mamoru benchmarks ({size}) on {results['machine']['cores']} cores,"
        f" {results['machine']['memory_gib']} GiB; load average"
        f" {results['machine']['load_average_at_start']}",
        flush=True,
    )
    var_dir = Path(tempfile.mkdtemp(prefix="mamoru-bench-"))
    system = System(var_dir, profile_dir)
    figures: list[Figure] = []
    try:
        heading("starting PostgreSQL, SMTP, the card sandbox and the four services")
        await system.start()
        print(f"    up in {time.monotonic() - started:.0f}s ({var_dir})", flush=True)
        for name in only:
            step_figures = await STEPS[name](system, sizes, results)
            show(step_figures)
            figures += step_figures
    finally:
        heading("stopping")
        await system.stop()
        shutil.rmtree(var_dir, ignore_errors=True)
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["seconds"] = time.monotonic() - started
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["figures"] = [asdict(f) for f in figures]
    write_results(out, results)
    drawn = chart.draw(results, chart_path)
    heading(f"results ({size}, {results['seconds']:.0f}s)")
    show(figures)
    print(f"\n  written: {out}" + (f", {chart_path}" if drawn else ""), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="quick")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--chart", type=Path, default=Path("bench/latency.png"))
    parser.add_argument("--reset-accounts", type=int, help="override the forced reset's size")
    parser.add_argument(
        "--registers", type=int, help="override how many registers take payments at once"
    )
    parser.add_argument(
        "--risk-rate", type=float, help="override the AssessLogin rate offered per second"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample each service with py-spy during each run and keep the profiles here",
    )
    args = parser.parse_args()
    only = tuple(name for name in args.only.split(",") if name)
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    sizes = SIZES[args.size]
    if args.reset_accounts:
        sizes = replace(sizes, reset_accounts=args.reset_accounts)
    if args.registers:
        sizes = replace(sizes, registers=args.registers)
    if args.risk_rate:
        sizes = replace(sizes, risk_rate=args.risk_rate)
    if args.profile is not None and profile.py_spy() is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    # On uvloop, as the services run: the stand-ins this process serves (SMTP, the
    # card sandbox) then cost what an outside party's own server would, not more.
    return uvloop.run(run(args.size, sizes, only, args.out, args.chart, args.profile))


if __name__ == "__main__":
    sys.exit(main())
