"""The capacity model: docs/capacity.md from what each operation costs.

``python -m bench.capacity [--results bench/results.json] [--out docs/capacity.md]``
(``make bench`` runs it after the full benchmarks). The costs are the steadiest
figures a run records: CPU per operation by process and database transactions
per payment, which hold still on a busy machine where latency does not. Without
a results file it uses the full run recorded in the README (``RECORDED``).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICES = ("identity", "wallet", "risk", "notify")
# One replica is one Python process, one event loop: plan each at 70% of a core,
# the autoscalers' target, and never fewer than production's three.
CORE_PER_REPLICA = 0.7
MIN_REPLICAS = 3
# A primary of a size a managed node offers without special ordering.
PRIMARY_CORES = 16


@dataclass(frozen=True)
class Costs:
    """What one operation costs, by process (CPU ms) or database (transactions)."""

    source: str
    payment_cpu_ms: dict[str, float]
    payment_transactions: dict[str, float]
    assessment_cpu_ms: dict[str, float]
    hash_cpu_ms: float
    attacker_share_hashed: float | None
    pgbench_tps: float
    pgbench_cores: int
    reset_per_second: float


# The full run of 2026-11-21 (README, "Results of the full run"), 2 cores.
RECORDED = Costs(
    source="the full run recorded in the README (2026-11-21, 2 cores)",
    payment_cpu_ms={
        "wallet": 9.4,
        "notify": 6.9,
        "postgres": 6.4,
        "risk": 3.7,
        "identity": 3.5,
    },
    payment_transactions={"wallet": 17, "identity": 7, "notify": 7, "risk": 6},
    assessment_cpu_ms={"risk": 1.4, "postgres": 0.7},
    hash_cpu_ms=21.0,
    # Risk let every attacker attempt it assessed through to a hash.
    attacker_share_hashed=1.0,
    pgbench_tps=2288.0,
    pgbench_cores=2,
    reset_per_second=7061.0,
)


@dataclass(frozen=True)
class Scale:
    """The incident's scale, and the two assumptions it needs."""

    stores: int = 21_000
    # A store's Mamoru payments in its busiest hour: one every two minutes.
    payments_per_store_hour: float = 30.0
    sign_ups: int = 1_500_000
    sign_up_days: float = 3.0
    # The busiest hour of sign-ups against their average over the three days.
    sign_up_peak_factor: float = 4.0
    stuffing_per_second: float = 1000.0
    # DESIGN's target: at most 5% of attacker attempts reach a password hash.
    target_share_hashed: float = 0.05
    group_ids: int = 16_500_000

    @property
    def payments_per_second(self) -> float:
        return self.stores * self.payments_per_store_hour / 3600

    @property
    def sign_ups_per_second(self) -> float:
        return self.sign_ups / (self.sign_up_days * 86400) * self.sign_up_peak_factor


def costs_from_results(results: dict[str, Any], source: str) -> Costs:
    """The costs a ``python -m bench`` results file recorded."""
    payments, risk, stuffing = results["payments"], results["risk"], results["stuffing"]
    hashing = stuffing["hashing"]
    return Costs(
        source=source,
        payment_cpu_ms={
            name: ms
            for name, ms in payments["cpu_ms_per_payment"].items()
            if name in (*SERVICES, "postgres")
        },
        payment_transactions=dict(payments["database_transactions_per_payment"]),
        assessment_cpu_ms={
            name: ms
            for name, ms in risk["cpu_ms_per_assessment"].items()
            if name in ("risk", "postgres")
        },
        hash_cpu_ms=hashing["cpu_ms_per_hash"],
        attacker_share_hashed=hashing.get("attacker_share_of_attempts_hashed"),
        pgbench_tps=results["pgbench"]["tps"],
        pgbench_cores=results["machine"]["cores"],
        reset_per_second=results["forced_reset"]["accounts_per_second"],
    )


@dataclass
class Plan:
    """Cores per part at the incident's scale, and what they mean in replicas."""

    cores: dict[str, float] = field(default_factory=dict)
    lines: dict[str, list[str]] = field(default_factory=dict)

    def add(self, part: str, cores: float, why: str) -> None:
        self.cores[part] = self.cores.get(part, 0.0) + cores
        self.lines.setdefault(part, []).append(f"{cores:.2f} for {why}")

    def replicas(self, service: str) -> int:
        return max(MIN_REPLICAS, math.ceil(self.cores.get(service, 0.0) / CORE_PER_REPLICA))


def plan(costs: Costs, scale: Scale, share_hashed: float) -> Plan:
    """Cores each part needs when ``share_hashed`` of attacker attempts reach a hash."""
    result = Plan()
    pay = scale.payments_per_second
    for part, ms in costs.payment_cpu_ms.items():
        result.add(part, pay * ms / 1000, f"{pay:,.0f} payments/s")
    assessments = scale.stuffing_per_second + scale.sign_ups_per_second
    for part, ms in costs.assessment_cpu_ms.items():
        result.add(part, assessments * ms / 1000, f"{assessments:,.0f} risk assessments/s")
    hashed = scale.stuffing_per_second * share_hashed
    result.add("identity", hashed * costs.hash_cpu_ms / 1000, f"{hashed:,.0f} attacker hashes/s")
    sign_ups = scale.sign_ups_per_second
    result.add("identity", sign_ups * costs.hash_cpu_ms / 1000, f"{sign_ups:,.0f} sign-up hashes/s")
    return result


def primary_load(costs: Costs, scale: Scale) -> dict[str, tuple[float, float]]:
    """Database -> (transactions/s from payments, pgbench-equivalent cores of its primary)."""
    per_core = costs.pgbench_tps / costs.pgbench_cores
    return {
        name: (rate, rate / per_core)
        for name, per_payment in sorted(costs.payment_transactions.items())
        for rate in [per_payment * scale.payments_per_second]
    }


def render(costs: Costs, scale: Scale) -> str:
    at_target = plan(costs, scale, scale.target_share_hashed)
    measured_share = costs.attacker_share_hashed
    as_measured = plan(costs, scale, measured_share) if measured_share is not None else None
    primaries = primary_load(costs, scale)
    per_core = costs.pgbench_tps / costs.pgbench_cores
    wallet_tx = costs.payment_transactions.get("wallet", 0.0)
    out = [
        "# Capacity",
        "",
        "Generated by `python -m bench.capacity` (`make bench` runs it) from "
        f"{costs.source}; do not edit by hand.",
        "",
        "## The load",
        "",
        "| | rate | from |",
        "|---|---|---|",
        f"| payments | {scale.payments_per_second:,.0f}/s | {scale.stores:,} stores, "
        f"{scale.payments_per_store_hour:g} payments each in their busiest hour (assumed) |",
        f"| sign-ups | {scale.sign_ups_per_second:,.0f}/s | {scale.sign_ups:,} in "
        f"{scale.sign_up_days:g} days, busiest hour "
        f"{scale.sign_up_peak_factor:g} times the average (assumed) |",
        f"| credential stuffing | {scale.stuffing_per_second:,.0f} attempts/s | sustained for "
        "days |",
        "",
        "## What each operation costs",
        "",
        "| operation | CPU, ms | database transactions |",
        "|---|---|---|",
        "| payment (code, capture, risk, notice, outcome) | "
        + ", ".join(f"{k} {v:.1f}" for k, v in costs.payment_cpu_ms.items())
        + " | "
        + ", ".join(f"{k} {v:g}" for k, v in costs.payment_transactions.items())
        + " |",
        "| risk assessment (sign-in or sign-up) | "
        + ", ".join(f"{k} {v:.1f}" for k, v in costs.assessment_cpu_ms.items())
        + " | |",
        f"| argon2id password check | identity {costs.hash_cpu_ms:.1f} | |",
        "",
        "## Cores and replicas",
        "",
        f"Each replica is one process, planned at {CORE_PER_REPLICA:.0%} of a core, "
        f"never fewer than {MIN_REPLICAS}. The first column holds the stuffing "
        f"defence to its target ({scale.target_share_hashed:.0%} of attacker attempts "
        "reach a hash); the second is what the benchmark measured"
        + (f" ({measured_share:.0%} hashed)." if measured_share is not None else ".")
        + "",
        "",
        "Identity hashes in worker threads, so one identity replica can use more than "
        "one core; give it CPU requests to match rather than only more replicas. The "
        "postgres row is the CPU of the four primaries together.",
        "",
        "| part | cores at target | replicas | cores as measured | replicas | made of |",
        "|---|---|---|---|---|---|",
    ]
    for part in (*SERVICES, "postgres"):
        target_cores = at_target.cores.get(part, 0.0)
        measured = as_measured.cores.get(part, 0.0) if as_measured else math.nan
        replicas = str(at_target.replicas(part)) if part in SERVICES else "-"
        replicas_measured = (
            str(as_measured.replicas(part)) if as_measured and part in SERVICES else "-"
        )
        made_of = "; ".join(at_target.lines.get(part, []))
        out.append(
            f"| {part} | {target_cores:.1f} | {replicas} | {measured:.1f} | "
            f"{replicas_measured} | {made_of} |"
        )
    out += [
        "",
        "## PostgreSQL primaries",
        "",
        f"pgbench (TPC-B-like) made {costs.pgbench_tps:,.0f} transactions/s on "
        f"{costs.pgbench_cores} cores in the same run: about {per_core:,.0f} per core. Each "
        "service has its own cluster, so each primary carries only its database's writes:",
        "",
        "| database | transactions/s from payments | pgbench-equivalent cores |",
        "|---|---|---|",
        *(f"| {name} | {rate:,.0f} | {cores:.1f} |" for name, (rate, cores) in primaries.items()),
        "",
        "TPC-B is not Mamoru's mix, so read the last column as an order of magnitude. "
        "Risk's decisions on sign-ins are written in batches "
        "(`RISK_DECISION_FLUSH_SECONDS`), so the stuffing flood adds little to its primary.",
        "",
        "## Where the first limit is",
        "",
        f"- **The wallet's primary.** Every payment is {wallet_tx:g} transactions on one "
        f"database, so one primary carries at most its transaction rate ÷ {wallet_tx:g} "
        f"payments/s: about {per_core / max(wallet_tx, 1):,.0f} payments/s per core of "
        f"pgbench-equivalent capacity, so {PRIMARY_CORES} cores carry "
        f"{PRIMARY_CORES * per_core / max(wallet_tx, 1):,.0f}/s, "
        f"{PRIMARY_CORES * per_core / max(wallet_tx, 1) / scale.payments_per_second:.1f} times "
        "the busiest hour. Services scale out; a primary only scales up, so "
        "this is the first ceiling to reach as load grows. Fewer transactions per "
        "payment (folding the capture's reads into its one transaction, batching "
        "outcomes) moves it further than a larger machine.",
        "- **Not the hot merchant account.** A capture never updates the merchant's row "
        "(ledger entries are inserted), so payments to one merchant do not queue on a "
        "lock: in the benchmark no capture failed or waited on another.",
        "- **Identity's hashing under stuffing.** At "
        f"{scale.stuffing_per_second:,.0f} attempts/s each hash that risk lets through "
        f"costs {costs.hash_cpu_ms:.0f} ms of CPU: at the target share that is "
        f"{scale.stuffing_per_second * scale.target_share_hashed * costs.hash_cpu_ms / 1000:.1f}"
        " cores, if every attempt is hashed "
        f"{scale.stuffing_per_second * costs.hash_cpu_ms / 1000:.0f}. Risk's gate before "
        "the hash, not the number of replicas, decides whether identity keeps up.",
        f"- **Forced reset** of all {scale.group_ids:,} group IDs at the measured "
        f"{costs.reset_per_second:,.0f} accounts/s takes "
        f"{scale.group_ids / costs.reset_per_second / 60:,.0f} minutes.",
        "",
        "## When a limit is reached",
        "",
        "- A saturated primary slows every statement: captures wait for pool "
        "connections (`MamoruDatabasePoolSaturated`), p99 rises (`MamoruSlowRpcs`), and "
        "calls past their deadline fail with DEADLINE_EXCEEDED (`MamoruHighErrorRate`). "
        "Captures are idempotent, so registers retry them safely; nothing is applied twice.",
        "- Risk answers within the wallet's and identity's timeouts or not at all: a late "
        "payment assessment falls back to the small-amount limit, a late sign-in "
        "assessment asks for a second factor.",
        "- Notices leave through the outbox, so a slow notify or SMTP relay never slows "
        "a payment; the backlog grows and drains later (`MamoruOutboxBacklog`).",
        "- A stuffing flood beyond identity's hashing capacity does not queue sign-ins "
        "behind the attacker's: identity hashes within a budget of one hash per core "
        "(`IDENTITY_HASH_SLOTS`), devices an account knows (their key proven) have a slot "
        "of their own and go first for the others, and new-device attempts beyond the "
        "budget get the wrong password's answer at once, without a hash "
        '(`mamoru_identity_refused_without_hash_total{reason="hash_budget"}`). Blocked '
        "countries and networks, and the networks risk contains during a wave, are refused "
        "inside identity before any RPC; `MamoruStuffingWave` pages the operator.",
        "- The autoscalers add replicas for CPU; they cannot add a primary. Raising a "
        "primary's CPU is a CloudNativePG switchover of a few seconds.",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/capacity.md"))
    parser.add_argument(
        "--payments-per-store-hour", type=float, default=Scale.payments_per_store_hour
    )
    args = parser.parse_args(argv)
    costs = RECORDED
    if args.results.is_file():
        results = json.loads(args.results.read_text())
        if {"payments", "risk", "stuffing", "forced_reset", "pgbench"} <= set(results):
            costs = costs_from_results(
                results,
                f"`{results.get('command', 'python -m bench')}`"
                f" at {results.get('finished_at', '?')}",
            )
        else:
            print(f"{args.results} lacks some benchmarks; using the recorded run")
    scale = Scale(payments_per_store_hour=args.payments_per_store_hour)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(costs, scale))
    print(f"written: {args.out} (costs from {costs.source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
