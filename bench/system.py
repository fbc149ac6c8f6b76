"""The system under test: the local stack as `make run` starts it, the people who
use it, and the harness's own reads and writes of the stack's databases.

People are made through the public contracts with the shared person driver
(register, verify the address from the mail, enrol an authenticator app, step
up, exchange for a wallet token). Only seeding at scale writes straight into a
service's database with COPY: that is the harness preparing data for a
measurement, never a way around a contract, and the measured operation itself
always goes through the RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import argon2
import asyncpg
import grpc
import psutil
from mamoru.identity.v1 import identity_pb2_grpc
from mamoru.risk.v1 import risk_pb2_grpc
from mamoru.wallet.v1 import wallet_pb2_grpc

from bench import profile
from bench.load import START_DELAY_SECONDS, Endpoint
from services.devstack import devdb
from services.devstack.stack import LocalStack
from services.identity.clients.hashing import OWASP_MEMORY_KIB, OWASP_PARALLELISM, OWASP_TIME_COST
from services.identity.domain.credentials import identifier_key
from tests.support import people
from tests.support.identity_driver import IdentityDriver
from tests.support.people import IDENTITY_ENV, stack_channel

CARD_NUMBER = "4242424242424242"
# Identity's value for an email contact (services/identity/storage/contacts.py).
EMAIL_CONTACT = 1


class System:
    """A running ``LocalStack`` plus stubs for the principals the harness acts as."""

    def __init__(self, var_dir: Path, profile_dir: Path | None = None) -> None:
        self.stack = LocalStack(var_dir=var_dir, log_dir=var_dir / "logs", extra_env=IDENTITY_ENV)
        self.profile_dir = profile_dir

    async def profiled(self, label: str, seconds: float) -> None:
        """With ``--profile``, sample every service through the measured part of a run
        (generators start ``START_DELAY_SECONDS`` after they are launched)."""
        if self.profile_dir is None:
            return
        await profile.record(
            self.pids(),
            self.profile_dir,
            label,
            delay=START_DELAY_SECONDS + 1,
            seconds=seconds - 2,
        )

    async def start(self) -> None:
        await self.stack.start()
        self.identity = IdentityDriver(
            identity_pb2_grpc.IdentityServiceStub(stack_channel(self.stack, "identity")),
            self.smtp,
        )
        self.wallet_gateway = wallet_pb2_grpc.WalletServiceStub(stack_channel(self.stack, "wallet"))
        self.wallet_operator = wallet_pb2_grpc.WalletServiceStub(
            stack_channel(self.stack, "wallet", as_="operator")
        )
        self.risk_operator = risk_pb2_grpc.RiskServiceStub(
            stack_channel(self.stack, "risk", as_="operator")
        )
        self.identity_operator = identity_pb2_grpc.IdentityServiceStub(
            stack_channel(self.stack, "identity", as_="operator")
        )

    async def stop(self) -> None:
        await self.stack.stop()

    @property
    def smtp(self) -> Any:
        assert self.stack.smtp is not None
        return self.stack.smtp

    def endpoint(self, service: str, principal: str) -> Endpoint:
        return Endpoint(
            service=service,
            address=self.stack.processes[service].address,
            tls_dir=str(self.stack.tls_dir),
            principal=principal,
        )

    def database_url(self, service: str) -> str:
        return devdb.database_url(self.stack.server_url, f"mamoru_{service}")

    def pids(self) -> dict[str, int]:
        return {
            name: proc.process.pid
            for name, proc in self.stack.processes.items()
            if proc.process is not None
        }

    def cpu_meter(self) -> CpuMeter:
        return CpuMeter(self)

    async def settle(self, *, idle_share: float = 0.15, within: float = 90.0) -> float:
        """Wait until the services and PostgreSQL are nearly idle (the mail and
        outbox work of the setup is done), so a measurement starts clean.
        Returns the seconds waited."""
        started = time.monotonic()
        meter = self.cpu_meter()
        quiet = 0
        while time.monotonic() - started < within and quiet < 2:
            meter.start()
            await asyncio.sleep(1.0)
            busy = sum(meter.stop().values()) - meter.used.get("harness (smtp, card sandbox)", 0)
            quiet = quiet + 1 if busy < idle_share else 0
        return time.monotonic() - started


class CpuMeter:
    """CPU seconds each part of the system used between ``start()`` and ``stop()``:
    the four services, PostgreSQL (every backend) and this harness process (SMTP
    server and card sandbox). Unlike latency, CPU per operation holds still on a
    busy machine, so it is the figure profiles are compared by."""

    def __init__(self, system: System) -> None:
        self._system = system
        self._before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _postgres(self) -> list[psutil.Process]:
        data_dir = str((self._system.stack.var_dir / "postgres").resolve())
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if "-D" in cmdline and data_dir in cmdline and "postgres" in cmdline[0]:
                return [process, *process.children()]
        return []

    def _sample(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        groups = {name: [psutil.Process(pid)] for name, pid in self._system.pids().items()}
        groups["postgres"] = self._postgres()
        groups["harness (smtp, card sandbox)"] = [psutil.Process()]
        for name, processes in groups.items():
            total = 0.0
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
            totals[name] = total
        return totals

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        # Backends that ended in between took their CPU time with them; never negative.
        self.used = {k: max(0.0, after[k] - self._before.get(k, 0.0)) for k in after}
        return self.used

    def per_operation_ms(self, operations: int) -> dict[str, float]:
        if operations <= 0:
            return {}
        per = {k: v * 1000 / operations for k, v in self.used.items()}
        per["total"] = sum(per.values())
        return per


# People through the contracts ----------------------------------------------------


@dataclass(frozen=True)
class Someone:
    """What a generator process needs to act as one person (picklable)."""

    email: str
    password: str
    device: str
    ip: str
    totp_secret: str
    last_totp_step: int
    wallet_token: str = ""
    # The phone's key (PKCS#8 PEM), registered to the account: it signs each sign-in's proof.
    device_key_pem: bytes = b""


async def make_people(
    system: System,
    count: int,
    *,
    funded_with: int = 0,
    concurrency: int = 32,
    label: str = "people",
) -> list[Someone]:
    """``count`` registered people with an authenticator app; with ``funded_with``
    also an enrolled wallet topped up by that amount from a card, and a wallet token."""
    made: list[Someone] = []
    failures = 0
    reasons: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    next_print = started + 5

    async def one() -> None:
        nonlocal failures, next_print
        async with gate:
            for attempt in range(5):
                try:
                    made.append(await _one_person(system, funded_with))
                    break
                except Exception as error:
                    # A TOTP step boundary or a busy moment (identity refuses a
                    # registration its hashing lane has no room for, "try again
                    # later"): another person stands in, a moment later.
                    failures += 1
                    reasons[_reason(error)] += 1
                    await asyncio.sleep(0.25 * (attempt + 1))
            now = time.monotonic()
            if now >= next_print:
                next_print = now + 5
                print(f"    {label}: {len(made):,}/{count:,} in {now - started:.0f}s", flush=True)

    await asyncio.gather(*(one() for _ in range(count)))
    if len(made) < count:
        raise RuntimeError(
            f"made only {len(made)} of {count} {label} ({failures} failures:"
            f" {dict(reasons.most_common(3))})"
        )
    print(
        f"    {label}: {count:,} in {time.monotonic() - started:.0f}s ({failures} retried)",
        flush=True,
    )
    return made


async def _one_person(system: System, funded_with: int) -> Someone:
    driver = system.identity
    person = await driver.register(f"bench-{uuid.uuid4().hex[:16]}@example.jp")
    await driver.enrol_totp(person, await driver.sign_in(person))
    token = ""
    if funded_with:
        payer = await driver.payer(person, system.wallet_gateway)
        await payer.enroll()
        assert system.stack.card_processor is not None
        card_token, three_ds = system.stack.card_processor.tokenise(CARD_NUMBER)
        card = await payer.register_card(card_token, three_ds)
        await payer.top_up_from_card(card.funding_source_id, funded_with)
        token = payer.token
    return Someone(
        email=person.email,
        password=person.password,
        device=person.device,
        ip=person.ip,
        totp_secret=person.totp_secret,
        last_totp_step=people.last_totp_step(person.totp_secret),
        wallet_token=token,
        device_key_pem=person.key().private_pem(),
    )


# Seeding at scale -----------------------------------------------------------------


def password_hash(password: str) -> str:
    """An argon2id hash with identity's parameters, so sign-ins need no rehash."""
    hasher = argon2.PasswordHasher(
        time_cost=OWASP_TIME_COST,
        memory_cost=OWASP_MEMORY_KIB,
        parallelism=OWASP_PARALLELISM,
        type=argon2.Type.ID,
    )
    return hasher.hash(password)


def seeded_email(prefix: str, index: int) -> str:
    return f"{prefix}-{index:08d}@example.net"


async def seed_accounts(
    system: System,
    count: int,
    *,
    prefix: str,
    password: str,
    chunk: int = 50_000,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Active accounts with a verified primary email ``seeded_email(prefix, i)``, all
    with the same password, written with COPY into identity's database.

    The harness is preparing data here, as a migration from the old system would:
    registering a million people through the RPCs would measure the registration,
    not the forced reset that follows.
    """
    stored = await asyncio.to_thread(password_hash, password)
    conn = await asyncpg.connect(system.database_url("identity"))
    try:
        numbers = iter(range(count))
        done = 0
        while done < count:
            batch = list(itertools.islice(numbers, chunk))
            accounts = [(uuid.uuid4(), uuid.uuid4()) for _ in batch]
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "accounts",
                    columns=["id", "status", "payer_id", "password_hash"],
                    records=((a, "active", p, stored) for a, p in accounts),
                )
                await conn.copy_records_to_table(
                    "contacts",
                    columns=[
                        "id",
                        "account_id",
                        "kind",
                        "address",
                        "address_key",
                        "verified",
                        "is_primary",
                        "login_key",
                        "verified_at",
                    ],
                    records=_contacts(prefix, batch, accounts),
                )
            done += len(batch)
            if on_progress is not None:
                on_progress(done)
        await conn.execute("analyze accounts")
        await conn.execute("analyze contacts")
    finally:
        await conn.close()


async def transactions_by_database(system: System) -> dict[str, int]:
    """Committed transactions so far in each service's database (every statement
    outside an explicit transaction counts as one)."""
    rows = await fetch_rows(
        system.stack.server_url,
        "select datname, xact_commit from pg_stat_database where datname like 'mamoru_%'",
    )
    return {str(r["datname"]).removeprefix("mamoru_"): int(r["xact_commit"]) for r in rows}


def _contacts(
    prefix: str, numbers: list[int], accounts: list[tuple[uuid.UUID, uuid.UUID]]
) -> Iterator[tuple[Any, ...]]:
    verified_at = datetime.now(UTC)
    for number, (account_id, _) in zip(numbers, accounts, strict=True):
        address = seeded_email(prefix, number)
        key = identifier_key(address)
        yield (
            uuid.uuid4(),
            account_id,
            EMAIL_CONTACT,
            address,
            key,
            True,
            True,
            key,
            verified_at,
        )


async def fetch_value(database_url: str, query: str, *args: Any) -> Any:
    """One read of a service's database, for a check the contracts do not expose."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def fetch_rows(database_url: str, query: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def _reason(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"
