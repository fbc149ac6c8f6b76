"""Benchmark 4: a forced credential reset of every account.

The accounts are seeded with COPY (see ``bench.system.seed_accounts``); the reset
itself is identity's ForceCredentialReset RPC as an operator runs it, streaming
progress. Afterwards the harness checks that every account's notice is queued
in identity's outbox (the relay delivers them from there) and every password
expired.
"""

from __future__ import annotations

import time
from typing import Any

from mamoru.identity.v1 import identity_pb2 as pb

from bench.system import System, fetch_value, seed_accounts

# docs/architecture.md: 1,000,000 accounts in at most five minutes.
TARGET_ACCOUNTS = 1_000_000
TARGET_SECONDS = 300.0
SEEDED_PASSWORD = "old password 0000"  # noqa: S105 - expired by the reset


async def run_forced_reset(system: System, *, accounts: int) -> dict[str, Any]:
    started = time.monotonic()
    next_print = started + 5

    def seeded(done: int) -> None:
        nonlocal next_print
        now = time.monotonic()
        if now >= next_print or done == accounts:
            next_print = now + 5
            print(f"    seeded {done:,}/{accounts:,} accounts in {now - started:.0f}s", flush=True)

    await seed_accounts(
        system, accounts, prefix="reset", password=SEEDED_PASSWORD, on_progress=seeded
    )
    seed_seconds = time.monotonic() - started

    started = time.monotonic()
    next_print = started + 5
    job_id, processed, total, messages = "", 0, 0, 0
    stream = system.identity_operator.ForceCredentialReset(
        pb.ForceCredentialResetRequest(
            all_accounts=True, reason="benchmark: forced reset of every account"
        ),
        timeout=3600,
    )
    async for progress in stream:
        messages += 1
        job_id, processed, total = progress.job_id, progress.processed, progress.total
        now = time.monotonic()
        if now >= next_print or progress.done:
            next_print = now + 5
            print(
                f"    reset {processed:,}/{total:,} accounts in {now - started:.0f}s"
                f" ({processed / max(now - started, 1e-9):,.0f}/s)",
                flush=True,
            )
    reset_seconds = time.monotonic() - started

    identity_db = system.database_url("identity")
    queued = int(
        await fetch_value(
            identity_db,
            "select count(*) from outbox where topic = 'notify.send_notice'"
            " and starts_with(idempotency_key, $1)",
            f"identity:forced-reset:{job_id}:",
        )
    )
    expired = int(
        await fetch_value(identity_db, "select count(*) from accounts where password_expired")
    )
    rate = processed / reset_seconds if reset_seconds > 0 else 0.0
    return {
        "accounts_seeded": accounts,
        "seed_seconds": seed_seconds,
        "job_id": job_id,
        "accounts_in_job": total,
        "processed": processed,
        "progress_messages": messages,
        "seconds": reset_seconds,
        "accounts_per_second": rate,
        "required_per_second": TARGET_ACCOUNTS / TARGET_SECONDS,
        "projected_seconds_for_1m": TARGET_ACCOUNTS / rate if rate else None,
        "notices_queued": queued,
        "every_notice_queued": queued == total == processed,
        "passwords_expired": expired,
    }
