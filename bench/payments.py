"""Benchmark 1: payments at one hot merchant, risk included.

A chain of thousands of stores of one merchant takes payments from many funded
wallets. Each register loops: the payer's phone issues a one-time code
(IssuePaymentCode as ``gateway`` with the wallet token), the store captures it
(CapturePayment as ``pos`` with the merchant key), and the wallet asks risk
(AssessPayment) inside the capture. The registers run in separate processes
(closed loop: a register starts its next sale when the last one ended).

Risk's payment velocity rule allows a wallet ``max_count`` payments per window,
so each wallet is used at most that often and the number of wallets bounds how
many payments a run can make; a run that uses them all up ends early and says so.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from mamoru.common.v1 import common_pb2
from mamoru.risk.v1 import risk_pb2
from mamoru.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from bench.load import (
    START_DELAY_SECONDS,
    Endpoint,
    Progress,
    error_reason,
    run_generators,
    wait_until,
)
from bench.results import Samples
from bench.system import Someone, System, fetch_value, transactions_by_database
from services.devstack.smtp import ReceivedMessage
from services.notify.domain.kinds import NoticeKind
from services.notify.domain.templates import subject_lines
from services.runtime.access import bearer_metadata
from tests.support.people import client

MERCHANT_CATEGORY = "5411"  # grocery stores and supermarkets (ISO 18245)
TOP_UP = 9_000
# Convenience-store sized purchases, in yen; ten of the largest still fit one top-up.
AMOUNTS = (120, 198, 240, 356, 420, 498, 550, 680, 780, 880)
CALL_TIMEOUT = 10.0
# How long the payers' last notices may take to reach the SMTP server after the run.
NOTICE_DEADLINE_SECONDS = 120.0
PAYMENT_SUBJECTS = frozenset(subject_lines(NoticeKind.PAYMENT))


@dataclass(frozen=True)
class PaymentSpec:
    wallet_gateway: Endpoint
    wallet_pos: Endpoint
    merchant_key: str
    store_ids: tuple[str, ...]
    payers: tuple[Someone, ...]
    registers: int
    per_wallet: int
    seconds: float
    start_at: float
    seed: int


@dataclass
class PaymentRun:
    captures: Samples = field(default_factory=Samples)
    issues: Samples = field(default_factory=Samples)
    payments: Samples = field(default_factory=Samples)
    elapsed: float = 0.0
    wallets_used_up: bool = False
    cpu_seconds: float = 0.0


async def generate(spec: PaymentSpec, progress: Progress) -> PaymentRun:
    """One generator process: ``spec.registers`` registers, each with its own wallets."""
    rng = random.Random(spec.seed)  # noqa: S311 - shapes the load, not a secret
    run = PaymentRun()
    gateway_channel = spec.wallet_gateway.channel()
    pos_channel = spec.wallet_pos.channel()
    await asyncio.gather(gateway_channel.channel_ready(), pos_channel.channel_ready())
    gateway = wallet_pb2_grpc.WalletServiceStub(gateway_channel)
    pos = wallet_pb2_grpc.WalletServiceStub(pos_channel)
    pos_metadata = (("x-merchant-key", spec.merchant_key),)
    # Everything a sale needs but the code, built before the clock starts.
    wallets = [
        (
            wallet_pb2.IssuePaymentCodeRequest(client=client(p.device, p.ip)),
            bearer_metadata(p.wallet_token),
        )
        for p in spec.payers
    ]
    amounts = [common_pb2.Money(amount_minor=a, currency="JPY") for a in AMOUNTS]
    basket = [risk_pb2.GOODS_CATEGORY_FOOD]
    deadline = spec.start_at + spec.seconds
    exhausted = 0

    async def register(mine: list[tuple[Any, Any]]) -> None:
        nonlocal exhausted
        uses = 0
        while time.time() < deadline:
            if uses >= spec.per_wallet * len(mine):
                exhausted += 1
                return
            request, metadata = mine[uses % len(mine)]
            uses += 1
            started = time.time()
            t0 = time.perf_counter()
            try:
                issued = await gateway.IssuePaymentCode(
                    request, metadata=metadata, timeout=CALL_TIMEOUT
                )
            except grpc.aio.AioRpcError as error:
                run.issues.failed(error_reason(error))
                progress.failed()
                continue
            t1 = time.perf_counter()
            run.issues.ok(started - spec.start_at, (t1 - t0) * 1000)
            try:
                await pos.CapturePayment(
                    wallet_pb2.CapturePaymentRequest(
                        code=issued.code,
                        amount=rng.choice(amounts),
                        store_id=rng.choice(spec.store_ids),
                        basket_categories=basket,
                        idempotency_key=str(uuid.uuid4()),
                    ),
                    metadata=pos_metadata,
                    timeout=CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError as error:
                run.captures.failed(error_reason(error))
                run.payments.failed(error_reason(error))
                progress.failed()
                continue
            t2 = time.perf_counter()
            run.captures.ok(started - spec.start_at + (t1 - t0), (t2 - t1) * 1000)
            run.payments.ok(started - spec.start_at, (t2 - t0) * 1000)
            progress.ok()

    shares = [wallets[r :: spec.registers] for r in range(spec.registers)]
    await wait_until(spec.start_at)
    cpu_at_start = time.process_time()
    await asyncio.gather(*(register(mine) for mine in shares if mine))
    run.cpu_seconds = time.process_time() - cpu_at_start
    run.elapsed = min(time.time(), deadline) - spec.start_at
    run.wallets_used_up = exhausted == len([s for s in shares if s])
    await gateway_channel.close()
    await pos_channel.close()
    return run


async def velocity_limit(system: System) -> tuple[int, float]:
    """Risk's payment velocity rule as configured: payments per wallet, window seconds."""
    reply = await system.risk_operator.ListRules(risk_pb2.ListRulesRequest(), timeout=10)
    for rule in reply.rules:
        if rule.rule_id == "payment.velocity" and rule.enabled:
            return int(rule.thresholds["max_count"]), float(rule.thresholds["window_seconds"])
    return 1_000_000, 0.0


async def open_stores(system: System, count: int) -> tuple[str, str, list[str]]:
    """The hot merchant and ``count`` of its stores, through the operator RPCs."""
    merchant = await system.wallet_operator.RegisterMerchant(
        wallet_pb2.RegisterMerchantRequest(name="Mamoru Mart", category=MERCHANT_CATEGORY),
        timeout=10,
    )
    merchant_id = merchant.merchant.merchant_id
    gate = asyncio.Semaphore(16)

    async def store(number: int) -> str:
        async with gate:
            reply = await system.wallet_operator.RegisterStore(
                wallet_pb2.RegisterStoreRequest(
                    merchant_id=merchant_id, store_code=f"S{number:05d}", name=f"店舗 {number}"
                ),
                timeout=30,
            )
            return str(reply.store_id)

    started = time.monotonic()
    store_ids = await asyncio.gather(*(store(n) for n in range(count)))
    print(f"    {count:,} stores registered in {time.monotonic() - started:.0f}s", flush=True)
    return merchant_id, merchant.merchant_key, list(store_ids)


async def run_payments(
    system: System,
    *,
    merchant_key: str,
    store_ids: list[str],
    payers: list[Someone],
    per_wallet: int,
    registers: int,
    processes: int,
    seconds: float,
) -> dict[str, Any]:
    processes = max(1, min(processes, registers))
    settled = await system.settle()
    print(f"    the system settled in {settled:.0f}s", flush=True)
    start_at = time.time() + START_DELAY_SECONDS
    specs = [
        PaymentSpec(
            wallet_gateway=system.endpoint("wallet", "gateway"),
            wallet_pos=system.endpoint("wallet", "pos"),
            merchant_key=merchant_key,
            store_ids=tuple(store_ids),
            payers=tuple(payers[p::processes]),
            registers=max(1, registers // processes),
            per_wallet=per_wallet,
            seconds=seconds,
            start_at=start_at,
            seed=p,
        )
        for p in range(processes)
    ]
    notice = payment_notice_to({p.email.lower() for p in payers})
    notices_before = await system.smtp.wait_for_matching(0, notice, 0)
    decisions_before = await _payment_decisions(system)
    transactions_before = await transactions_by_database(system)
    meter = system.cpu_meter()
    meter.start()
    profiling = asyncio.create_task(system.profiled("payments", seconds))
    runs = await run_generators(generate, specs, label="payments", seconds=seconds)
    await profiling
    captures = Samples.merged(r.captures for r in runs)
    # A payment's notice is part of its cost: the meter runs until the last payer's
    # notice has reached the SMTP server (or the deadline says it never will).
    notices = await system.smtp.wait_for_matching(
        notices_before + captures.count, notice, NOTICE_DEADLINE_SECONDS
    )
    notices -= notices_before
    meter.stop()
    transactions = await transactions_by_database(system)
    elapsed = max(r.elapsed for r in runs)
    issues = Samples.merged(r.issues for r in runs)
    payments = Samples.merged(r.payments for r in runs)
    reconciled = await system.wallet_operator.Reconcile(wallet_pb2.ReconcileRequest(), timeout=120)
    decisions = await _payment_decisions(system) - decisions_before
    return {
        "seconds": elapsed,
        "registers": registers,
        "generator_processes": processes,
        "stores": len(store_ids),
        "wallets": len(payers),
        "payments_per_wallet_cap": per_wallet,
        "wallets_used_up": any(r.wallets_used_up for r in runs),
        "payments_per_second": captures.count / elapsed if elapsed > 0 else 0.0,
        "capture": captures.summary(elapsed),
        "issue_code": issues.summary(elapsed),
        "sale": payments.summary(elapsed),
        "risk_payment_decisions": decisions,
        "payment_notices_delivered": notices,
        # Risk may refuse a payment it assessed, so there may be more decisions than payments.
        "every_payment_assessed": decisions >= captures.count,
        "every_payment_notified": notices == captures.count,
        "database_transactions_per_payment": {
            name: (count - transactions_before.get(name, 0)) / max(captures.count, 1)
            for name, count in sorted(transactions.items())
        },
        "cpu_ms_per_payment": {
            **meter.per_operation_ms(captures.count),
            "load generators": sum(r.cpu_seconds for r in runs) * 1000 / max(captures.count, 1),
        },
        "reconcile": {
            "balanced": reconciled.balanced,
            "differences": len(reconciled.differences),
            "ledger_sum_minor": reconciled.ledger_sum_minor,
            "unbalanced_entries": len(reconciled.unbalanced_entries),
            "accounts_checked": reconciled.accounts_checked,
        },
        "series": {"capture": captures.over_time()},
    }


def payment_notice_to(addresses: set[str]) -> Callable[[ReceivedMessage], bool]:
    """Whether a message is a payment notice to any of ``addresses``."""

    def matches(message: ReceivedMessage) -> bool:
        return message.subject in PAYMENT_SUBJECTS and any(
            r.lower() in addresses for r in message.recipients
        )

    return matches


async def _payment_decisions(system: System) -> int:
    value = await fetch_value(
        system.database_url("risk"), "select count(*) from decisions where kind = 'payment'"
    )
    return int(value)
