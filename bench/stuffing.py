"""Benchmark 2: sign-ins under a credential-stuffing flood.

An attacker replays a leaked list of email/password pairs at a fixed rate from
thousands of foreign IPv4 addresses (``ATTACK_NETWORKS`` /24 networks of
``ADDRESSES_PER_NETWORK`` each), every attempt from a fresh device, as the
gateway would pass it on. The list mixes identifiers that do not exist, seeded
accounts with a wrong and with their reused right password, and the real
people's own addresses with their right and a wrong password; the attacker holds
no device key, so no attempt proves a known device. Meanwhile those people sign
in at a steady rate from their usual phone (which proves its registered key) and
home address, and answer a second factor (their authenticator app) when identity
asks for one.

A takeover is an attacker attempt that got a session. Which attempts reached a
password hash is read from risk's outcome log: identity reports an outcome with
risk's decision for every attempt whose password it checked, and one without a
decision (a sample of them) for attempts it refused before asking risk.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
import pyotp
from mamoru.identity.v1 import identity_pb2 as pb
from mamoru.identity.v1 import identity_pb2_grpc

from bench.load import (
    START_DELAY_SECONDS,
    Endpoint,
    Progress,
    error_reason,
    open_loop,
    run_generators,
    status_reason,
)
from bench.results import Samples
from bench.system import Someone, System, fetch_rows, password_hash, seed_accounts, seeded_email
from services.runtime.countries import bundled_lookup
from services.runtime.device_proof import DeviceKey
from tests.support.people import client

ATTACK_NETWORKS = 256
ADDRESSES_PER_NETWORK = 16
REUSED_PASSWORD = "sakura-2019-summer!"  # noqa: S105 - the leaked list's, on purpose
CALL_TIMEOUT = 10.0
# Share of the leaked list by kind of pair.
LIST_MIX = (
    ("unknown identifier", 0.60),
    ("seeded account, wrong password", 0.25),
    ("seeded account, reused right password", 0.10),
    ("real person, wrong password", 0.03),
    ("real person, right password", 0.02),
)


def foreign_addresses(networks: int, per_network: int, seed: int = 2019) -> list[str]:
    """IPv4 addresses in ``networks`` distinct /24s that the bundled country data
    places outside Japan (the incident's logins came from abroad)."""
    rng = random.Random(seed)  # noqa: S311 - shapes the load, not a secret
    chosen: list[str] = []
    seen: set[int] = set()
    while len(seen) < networks:
        network = rng.randrange(1 << 24) << 8
        address = ipaddress.IPv4Address(network + 1)
        if network in seen or not address.is_global:
            continue
        country = bundled_lookup(str(address))
        if not country or country == "JP":
            continue
        seen.add(network)
        chosen += [str(ipaddress.IPv4Address(network + 1 + i)) for i in range(per_network)]
    return chosen


@dataclass(frozen=True)
class AttackSpec:
    identity: Endpoint
    pairs: tuple[tuple[str, str, int], ...]
    addresses: tuple[str, ...]
    rate: float
    seconds: float
    start_at: float
    max_in_flight: int


@dataclass
class AttackRun:
    refused: Samples = field(default_factory=Samples)
    challenged: Samples = field(default_factory=Samples)
    takeovers: list[str] = field(default_factory=list)
    skipped: int = 0
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    cpu_seconds: float = 0.0


async def attack(spec: AttackSpec, progress: Progress) -> AttackRun:
    run = AttackRun()
    channel = spec.identity.channel()
    await channel.channel_ready()
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    requests = [
        pb.LoginRequest(
            identifier=email,
            password=password,
            client=client(f"bot-{uuid.uuid4().hex[:12]}", spec.addresses[i % len(spec.addresses)]),
        )
        for i, (email, password, _) in enumerate(spec.pairs)
    ]
    kinds = [LIST_MIX[kind][0] for _, _, kind in spec.pairs]

    def tally(kind: str, result: str) -> None:
        row = run.by_kind.setdefault(kind, {})
        row[result] = row.get(result, 0) + 1

    async def attempt(index: int, scheduled: float) -> None:
        request = requests[index % len(requests)]
        kind = kinds[index % len(kinds)]
        started = time.time()
        t0 = time.perf_counter()
        # The status is read from the call instead of raised: most answers are
        # refusals, and an exception per refusal would be the generator's own cost.
        call = stub.Login(request, timeout=CALL_TIMEOUT)
        code = await call.code()
        latency = (time.perf_counter() - t0) * 1000
        if code == grpc.StatusCode.UNAUTHENTICATED:
            run.refused.ok(started - spec.start_at, latency)
            tally(kind, "refused")
            progress.ok()
            return
        if code != grpc.StatusCode.OK:
            run.refused.failed(status_reason(code, await call.details()))
            tally(kind, code.name)
            progress.failed()
            return
        reply = await call
        if reply.HasField("session"):
            run.takeovers.append(request.identifier)
            tally(kind, "session")
        else:
            run.challenged.ok(started - spec.start_at, latency)
            tally(kind, "second factor asked")
        progress.ok()

    cpu_at_start = time.process_time()
    run.skipped = await open_loop(
        rate=spec.rate,
        seconds=spec.seconds,
        start_at=spec.start_at,
        call=attempt,
        max_in_flight=spec.max_in_flight,
    )
    run.cpu_seconds = time.process_time() - cpu_at_start
    await channel.close()
    return run


@dataclass(frozen=True)
class LegitSpec:
    identity: Endpoint
    people: tuple[Someone, ...]
    rate: float
    seconds: float
    start_at: float


@dataclass
class LegitRun:
    sign_ins: Samples = field(default_factory=Samples)
    second_factor: int = 0
    skipped: int = 0


async def legitimate(spec: LegitSpec, progress: Progress) -> LegitRun:
    run = LegitRun()
    channel = spec.identity.channel()
    await channel.channel_ready()
    stub = identity_pb2_grpc.IdentityServiceStub(channel)
    where = [client(p.device, p.ip) for p in spec.people]
    logins = [
        pb.LoginRequest(identifier=p.email, password=p.password, client=where[i])
        for i, p in enumerate(spec.people)
    ]
    keys = [DeviceKey.from_private_pem(p.device_key_pem) for p in spec.people]
    totps = [pyotp.TOTP(p.totp_secret) for p in spec.people]
    last_step = [p.last_totp_step for p in spec.people]
    busy = [False] * len(spec.people)

    async def totp_code(index: int) -> str:
        # Identity takes each time step once per authenticator; the current and the
        # next step, never the previous one, which a slow call could see expire.
        while True:
            current = int(time.time()) // 30
            step = max(current, last_step[index] + 1)
            if step <= current + 1:
                last_step[index] = step
                return str(totps[index].at(step * 30))
            await asyncio.sleep(0.5)

    async def sign_in(number: int, scheduled: float) -> None:
        index = number % len(spec.people)
        if busy[index]:
            index = next((i for i, b in enumerate(busy) if not b), index)
        busy[index] = True
        started = time.time()
        t0 = time.perf_counter()
        try:
            # Each proof is fresh (its own jti and time), as the phone would sign it.
            login = logins[index]
            login.device_proof = keys[index].proof("Login", login.identifier)
            reply = await stub.Login(login, timeout=CALL_TIMEOUT)
            if not reply.HasField("session"):
                run.second_factor += 1
                challenge = reply.challenge
                if pb.CHALLENGE_METHOD_TOTP not in challenge.methods:
                    run.sign_ins.failed("no authenticator app offered")
                    progress.failed()
                    return
                await stub.VerifySecondFactor(
                    pb.VerifySecondFactorRequest(
                        challenge_id=challenge.challenge_id,
                        totp_code=await totp_code(index),
                        client=where[index],
                        device_proof=keys[index].proof(
                            "VerifySecondFactor", challenge.challenge_id
                        ),
                    ),
                    timeout=CALL_TIMEOUT,
                )
        except grpc.aio.AioRpcError as error:
            run.sign_ins.failed(error_reason(error))
            progress.failed()
            return
        finally:
            busy[index] = False
        run.sign_ins.ok(started - spec.start_at, (time.perf_counter() - t0) * 1000)
        progress.ok()

    run.skipped = await open_loop(
        rate=spec.rate,
        seconds=spec.seconds,
        start_at=spec.start_at,
        call=sign_in,
        max_in_flight=max(8, len(spec.people) // 2),
    )
    await channel.close()
    return run


def leaked_list(
    size: int, people: list[Someone], victims: int, seed: int = 7
) -> list[tuple[str, str, int]]:
    """``size`` pairs in ``LIST_MIX`` proportions, shuffled: (email, password, kind)."""
    rng = random.Random(seed)  # noqa: S311 - shapes the load, not a secret
    pairs: list[tuple[str, str, int]] = []
    for kind, (_, share) in enumerate(LIST_MIX):
        for n in range(round(size * share)):
            if kind == 0:
                pairs.append((f"leaked-{uuid.uuid4().hex[:10]}@example.org", "hunter2-x", kind))
            elif kind in (1, 2):
                email = seeded_email("victim", rng.randrange(victims))
                pairs.append((email, REUSED_PASSWORD if kind == 2 else f"pw{n}-wrong", kind))
            else:
                person = people[n % len(people)]
                pairs.append((person.email, person.password if kind == 4 else "wrong", kind))
    rng.shuffle(pairs)
    return pairs


def hash_cpu_ms() -> float:
    """CPU milliseconds one password check with identity's argon2id parameters costs here."""
    import argon2

    stored = password_hash("calibration")
    checker = argon2.PasswordHasher()
    started = time.process_time()
    rounds = 10
    for _ in range(rounds):
        with contextlib.suppress(argon2.exceptions.VerificationError):
            checker.verify(stored, "not it")
    return (time.process_time() - started) / rounds * 1000


async def run_stuffing(
    system: System,
    *,
    people: list[Someone],
    victims: int,
    attack_rate: float,
    legit_rate: float,
    seconds: float,
    attack_processes: int,
) -> dict[str, Any]:
    print(f"    seeding {victims:,} accounts whose password leaked elsewhere", flush=True)
    await seed_accounts(system, victims, prefix="victim", password=REUSED_PASSWORD)
    addresses = foreign_addresses(ATTACK_NETWORKS, ADDRESSES_PER_NETWORK)
    pairs = leaked_list(int(attack_rate * seconds) + 1, people, victims)
    await system.settle()
    start_at = time.time() + START_DELAY_SECONDS
    meter = system.cpu_meter()
    meter.start()
    attack_specs: list[Any] = [
        AttackSpec(
            identity=system.endpoint("identity", "gateway"),
            pairs=tuple(pairs[p::attack_processes]),
            addresses=tuple(addresses[p::attack_processes]),
            rate=attack_rate / attack_processes,
            seconds=seconds,
            start_at=start_at,
            max_in_flight=256,
        )
        for p in range(attack_processes)
    ]
    legit_spec = LegitSpec(
        identity=system.endpoint("identity", "gateway"),
        people=tuple(people),
        rate=legit_rate,
        seconds=seconds,
        start_at=start_at,
    )
    profiling = asyncio.create_task(system.profiled("stuffing", seconds))
    outcomes = await run_generators(
        _either,
        [("attack", s) for s in attack_specs] + [("legit", legit_spec)],
        label="stuffing",
        seconds=seconds,
        rate_label="answers/s",
    )
    await profiling
    meter.stop()
    attacks: list[AttackRun] = outcomes[:-1]
    legit: LegitRun = outcomes[-1]
    refused = Samples.merged(a.refused for a in attacks)
    challenged = Samples.merged(a.challenged for a in attacks)
    answered = refused.count + challenged.count
    takeovers = [email for a in attacks for email in a.takeovers]
    by_kind: dict[str, dict[str, int]] = {}
    for a in attacks:
        for kind, row in a.by_kind.items():
            for result, count in row.items():
                by_kind.setdefault(kind, {})[result] = (
                    by_kind.setdefault(kind, {}).get(result, 0) + count
                )
    await asyncio.sleep(2)  # outcome reports are sent after the answer
    hashed = await _hashed_attempts(system, start_at)
    verdicts = await _attacker_verdicts(system, start_at)
    per_hash = await asyncio.to_thread(hash_cpu_ms)
    attempts = answered + sum(a.refused.error_count for a in attacks) + len(takeovers)
    sign_ins = legit.sign_ins
    tried = sign_ins.count + sign_ins.error_count
    return {
        "seconds": seconds,
        "attack": {
            "offered_per_second": attack_rate,
            "attempts": attempts,
            "answered_per_second": answered / seconds,
            "skipped_for_in_flight_cap": sum(a.skipped for a in attacks),
            # The attack's own processes, on the same cores as the system they attack.
            "generator_cpu_seconds": sum(a.cpu_seconds for a in attacks),
            "generator_cpu_ms_per_attempt": (
                sum(a.cpu_seconds for a in attacks) * 1000 / attempts if attempts else 0.0
            ),
            "refused": refused.summary(seconds),
            "second_factor_asked": challenged.summary(seconds),
            "by_kind_of_pair": by_kind,
            "networks": ATTACK_NETWORKS,
            "addresses": len(addresses),
            "risk_verdicts": verdicts,
        },
        "takeovers": len(takeovers),
        "takeover_identifiers": takeovers[:20],
        "legitimate": {
            "offered_per_second": legit_rate,
            "people": len(people),
            "attempts": tried,
            "success_rate": sign_ins.count / tried if tried else 0.0,
            "second_factor_asked": legit.second_factor,
            "skipped_for_in_flight_cap": legit.skipped,
            **sign_ins.summary(seconds),
        },
        "hashing": {
            "cpu_ms_per_hash": per_hash,
            "attacker_hashes": hashed["attacker"],
            "legitimate_hashes": hashed["legitimate"],
            "attacker_hashes_let_through_by_risk": hashed["attacker_let_through"],
            "attacker_hashes_reported_by_identity": hashed["attacker_reported"],
            "legitimate_hashes_reported_by_identity": hashed["legitimate_reported"],
            "attacker_cpu_seconds": hashed["attacker"] * per_hash / 1000,
            "legitimate_cpu_seconds": hashed["legitimate"] * per_hash / 1000,
            "attacker_share_of_attempts_hashed": hashed["attacker"] / attempts if attempts else 0,
            "identity_cpu_seconds_total": meter.used["identity"],
            "cpu_seconds_by_part": meter.used,
        },
        "series": {
            "legitimate sign-in": sign_ins.over_time(),
            "attacker answered": Samples.merged([refused, challenged]).over_time(),
        },
    }


async def _either(job: tuple[str, Any], progress: Progress) -> Any:
    kind, spec = job
    if kind == "attack":
        return await attack(spec, progress)
    return await legitimate(spec, progress)


# The people's home addresses are in 2001:db8::/32; every attacker address is IPv4.
_LEGIT = "ip like '2001:db8:%'"


async def _hashed_attempts(system: System, since: float) -> dict[str, int]:
    """Password attempts that reached a hash, counted two ways, each of which can miss
    some: risk's decisions that let an attempt through (identity hashes every one
    not denied or throttled, and also every one risk did not answer in time), and
    the outcomes identity reported after hashing (dropped when risk is overloaded).
    An outcome without a decision is an attempt identity refused before asking risk
    (reported so that risk still counts the wave), never a hash. The larger of the
    two is the estimate."""
    let_through = await fetch_rows(
        system.database_url("risk"),
        f"""
        select ({_LEGIT}) as legitimate, count(*) as n from decisions
        where kind = 'login' and decided_at >= to_timestamp($1)
          and verdict in ('ALLOW', 'CHALLENGE')
          and inputs ->> 'method' = 'password'
        group by 1
        """,  # noqa: S608 - a constant condition
        since,
    )
    reported = await fetch_rows(
        system.database_url("risk"),
        f"""
        select ({_LEGIT}) as legitimate, count(*) as n from outcomes
        where outcome in ('password_wrong', 'password_ok', 'login_succeeded')
          and decision_id <> ''
          and occurred_at >= to_timestamp($1)
        group by 1
        """,  # noqa: S608 - a constant condition
        since,
    )
    through = {bool(r["legitimate"]): int(r["n"]) for r in let_through}
    after = {bool(r["legitimate"]): int(r["n"]) for r in reported}
    return {
        "attacker": max(through.get(False, 0), after.get(False, 0)),
        "legitimate": max(through.get(True, 0), after.get(True, 0)),
        "attacker_let_through": through.get(False, 0),
        "legitimate_let_through": through.get(True, 0),
        "attacker_reported": after.get(False, 0),
        "legitimate_reported": after.get(True, 0),
    }


async def _attacker_verdicts(system: System, since: float) -> dict[str, int]:
    rows = await fetch_rows(
        system.database_url("risk"),
        f"""
        select verdict, count(*) as n from decisions
        where kind = 'login' and decided_at >= to_timestamp($1) and not ({_LEGIT})
        group by verdict order by verdict
        """,  # noqa: S608 - a constant condition
        since,
    )
    return {str(r["verdict"]).lower(): int(r["n"]) for r in rows}
