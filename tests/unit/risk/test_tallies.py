"""The windows kept in memory: buckets expire, addresses group by /24 and /48,
identifiers are counted once per IP and per device, memory stays bounded, and
what is flushed and read back is counted exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from services.risk.domain.network import subnet_of
from services.risk.domain.outcomes import OutcomeEvent
from services.risk.domain.policy import Policy
from services.risk.domain.rules import RuleBook
from services.risk.domain.tallies import Batch, Tallies, Wanted
from services.risk.domain.windows import BUCKET_SECONDS, LoginWindows, bucket_of
from services.risk.use_cases.counting import Counting

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@dataclass
class InForce:
    policy: Policy = field(default_factory=Policy)
    rules: RuleBook = field(default_factory=RuleBook)


@dataclass
class SharedDatabase:
    """The counters table as every replica adds to it: sums per key and bucket."""

    cells: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    identifiers: set[tuple[str, str, int, str]] = field(default_factory=set)
    failing: bool = False

    async def add(self, batch: Batch) -> None:
        if self.failing:
            raise ConnectionError("database away")
        for c in batch.cells:
            cell = self.cells.setdefault((c.dimension, c.key, c.bucket), [0, 0, 0])
            cell[0] += c.attempts
            cell[1] += c.failures
            cell[2] += c.unknown
        for i in batch.identifiers:
            self.identifiers.add((i.dimension, i.key, i.bucket, i.identifier))

    async def read(self, wanted: Sequence[Wanted]):
        keys = {(w.dimension, w.key): w for w in wanted}
        cells = [
            (d, k, b, *values)
            for (d, k, b), values in self.cells.items()
            if (d, k) in keys and b >= keys[d, k].since
        ]
        identifiers = [
            row
            for row in self.identifiers
            if (row[0], row[1]) in keys
            and keys[row[0], row[1]].identifiers
            and row[2] >= keys[row[0], row[1]].since
        ]
        return cells, identifiers


class NoHistory:
    async def previous_login(self, account_id: str):
        return None, None

    async def last_credential_change(self, session_id: str):
        return None

    async def last_top_up(self, wallet_id: str):
        return None, False


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def replica(database: SharedDatabase, clock: Clock) -> Counting:
    return Counting(database, NoHistory(), InForce(), clock=clock)


async def attempt(
    counting: Counting, clock: Clock, ip: str, identifier: str, *, device: str = "",
    account_id: str = "",
):  # fmt: skip
    return await counting.login(
        ip=ip, subnet=subnet_of(ip), device_id=device, known_device=False,
        account_id=account_id, identifier=identifier, unknown=not account_id,
        windows=LoginWindows.of(clock.now, RuleBook()),
    )  # fmt: skip


def failed(counting: Counting, clock: Clock, ip: str, account_id: str = "") -> None:
    counting.outcome(
        OutcomeEvent(
            outcome="password_wrong", decision_id="", account_id=account_id, wallet_id="",
            payer_id="", session_id="", ip=ip, device_id="", amount_minor=0, currency="",
            movement_id="", identifier_hash="", occurred_at=clock.now, subnet=subnet_of(ip),
        )
    )  # fmt: skip


async def test_failures_leave_the_window_when_their_buckets_are_older_than_it():
    clock = Clock()
    counting = replica(SharedDatabase(), clock)
    for _ in range(3):
        failed(counting, clock, "203.0.113.7")
    assert (await attempt(counting, clock, "203.0.113.7", "h-1")).ip_failures == 3
    clock.now = NOW + timedelta(seconds=RuleBook().window("login.ip_failures") - BUCKET_SECONDS)
    assert (await attempt(counting, clock, "203.0.113.7", "h-1")).ip_failures == 3
    clock.now = NOW + timedelta(seconds=RuleBook().window("login.ip_failures"))
    assert (await attempt(counting, clock, "203.0.113.7", "h-1")).ip_failures == 0


async def test_ipv4_addresses_group_by_24_and_ipv6_addresses_by_48():
    clock = Clock()
    counting = replica(SharedDatabase(), clock)
    for ip in ("198.51.100.1", "198.51.100.254", "2001:db8:7:1::1", "2001:db8:7:ffff::2"):
        failed(counting, clock, ip)
    assert (await attempt(counting, clock, "198.51.100.77", "h")).subnet_failures == 2
    assert (await attempt(counting, clock, "198.51.101.1", "h")).subnet_failures == 0
    assert (await attempt(counting, clock, "2001:db8:7:42::9", "h")).subnet_failures == 2
    assert (await attempt(counting, clock, "2001:db8:8::1", "h")).subnet_failures == 0


async def test_distinct_identifiers_count_each_identifier_once_per_ip_including_this_one():
    clock = Clock()
    counting = replica(SharedDatabase(), clock)
    seen = [
        (await attempt(counting, clock, "203.0.113.7", f"h-{n % 3}")).ip_distinct_identifiers
        for n in range(6)
    ]
    assert seen == [1, 2, 3, 3, 3, 3]
    assert (await attempt(counting, clock, "203.0.113.8", "h-0")).ip_distinct_identifiers == 1


async def test_one_device_trying_many_accounts_is_counted_across_addresses():
    clock = Clock()
    counting = replica(SharedDatabase(), clock)
    for n in range(11):
        last = await attempt(counting, clock, f"100.64.{n}.1", f"h-{n}", device="bot")
    assert last.device_distinct_identifiers == 11
    assert last.ip_distinct_identifiers == 1
    verdict_window = RuleBook().window("login.device_distinct_accounts")
    clock.now = NOW + timedelta(seconds=verdict_window)
    later = await attempt(counting, clock, "100.65.0.1", "h-new", device="bot")
    assert later.device_distinct_identifiers == 1


async def test_counts_flushed_by_one_replica_are_read_by_another_once():
    clock = Clock()
    database = SharedDatabase()
    one, two = replica(database, clock), replica(database, clock)
    failed(one, clock, "203.0.113.7", "acct-1")
    for _ in range(2):  # hot here: counted more than once
        await attempt(two, clock, "203.0.113.7", "h-1", account_id="acct-1")
    for _ in range(3):
        await one.sync()
        await two.sync()
    seen = await attempt(two, clock, "203.0.113.7", "h-2", account_id="acct-1")
    assert (seen.ip_failures, seen.account_failures, seen.global_failures) == (1, 1, 1)
    assert seen.global_attempts == 2, "its own attempts, flushed and read back, count once"


async def test_a_key_counted_once_here_is_not_read_back_until_it_is_counted_again():
    clock = Clock()
    database = SharedDatabase()
    one, two = replica(database, clock), replica(database, clock)
    failed(one, clock, "203.0.113.7")
    await one.sync()
    assert (await attempt(two, clock, "203.0.113.7", "h-1")).ip_failures == 0
    await two.sync()
    assert (await attempt(two, clock, "203.0.113.7", "h-1")).ip_failures == 0
    await two.sync()
    assert (await attempt(two, clock, "203.0.113.7", "h-1")).ip_failures == 1


async def test_a_failed_flush_neither_loses_nor_doubles_counts():
    clock = Clock()
    database = SharedDatabase(failing=True)
    counting = replica(database, clock)
    failed(counting, clock, "203.0.113.7")
    with pytest.raises(ConnectionError):
        await counting.sync()
    assert counting.global_failures(300) == 1
    database.failing = False
    await counting.sync()
    await counting.sync()
    assert counting.global_failures(300) == 1
    assert database.cells["global", "", bucket_of(NOW)] == [0, 1, 0]


def test_memory_stays_bounded_under_a_flood_from_many_addresses():
    tallies = Tallies(horizon_buckets=360, max_cells=5_000, max_identifiers_per_key=50)
    bucket = bucket_of(NOW)
    for n in range(20_000):
        ip = f"10.{n // 250 % 250}.{n % 250}.1"
        tallies.count("ip", ip, bucket, attempts=1)
        tallies.identify("ip", ip, bucket, f"h-{n}")
        tallies.identify("device", "bot", bucket, f"h-{n}")
        if n % 1_000 == 0:
            tallies.take()  # flushed: forgettable
            tallies.prune(bucket)
    tallies.take()
    tallies.prune(bucket)
    assert tallies.cells <= 5_000
    assert tallies.distinct("device", "bot", bucket) == 50, "saturates at the cap"


def test_keys_idle_for_longer_than_every_window_are_forgotten():
    tallies = Tallies(horizon_buckets=30)
    bucket = bucket_of(NOW)
    tallies.count("ip", "203.0.113.7", bucket, failures=1)
    tallies.take()
    tallies.prune(bucket + 10)
    assert tallies.total("ip", "203.0.113.7", bucket, bucket + 10) == (0, 1, 0)
    tallies.prune(bucket + 31)
    assert ("ip", "203.0.113.7") not in {(w.dimension, w.key) for w in tallies.wanted(bucket)}
    assert tallies.total("ip", "203.0.113.7", bucket, bucket + 31) == (0, 0, 0)
    assert len(tallies) == 0


def test_a_key_with_counts_still_to_flush_is_never_forgotten():
    tallies = Tallies(horizon_buckets=30, max_cells=10)
    bucket = bucket_of(NOW)
    tallies.count("ip", "203.0.113.7", bucket, failures=1)
    tallies.count("ip", "203.0.113.8", bucket, failures=1)
    tallies.prune(bucket + 100)
    assert tallies.total("ip", "203.0.113.7", bucket, bucket) == (0, 1, 0)
    batch = tallies.take()
    assert len(batch.cells) == 2


def test_identifiers_read_from_other_replicas_leave_the_window_in_their_turn():
    tallies = Tallies(horizon_buckets=360)
    bucket = bucket_of(NOW)
    tallies.identify("ip", "203.0.113.7", bucket, "mine")
    wanted = tallies.wanted(bucket)
    tallies.refreshed(
        wanted, [], [("ip", "203.0.113.7", bucket - 100, "theirs")], settled=bucket - 1
    )
    assert tallies.distinct("ip", "203.0.113.7", bucket - 100) == 2
    assert tallies.distinct("ip", "203.0.113.7", bucket - 99) == 1


async def test_memory_stays_bounded_while_the_database_is_away():
    clock = Clock()
    counting = Counting(SharedDatabase(failing=True), NoHistory(), InForce(), clock=clock,
                        tallies=Tallies(horizon_buckets=360, max_cells=2_000))  # fmt: skip
    for n in range(3_000):
        failed(counting, clock, f"10.{n // 250}.{n % 250}.1")
        if n % 500 == 0:
            with pytest.raises(ConnectionError):
                await counting.sync()
    with pytest.raises(ConnectionError):
        await counting.sync()
    assert counting.tallies.cells <= 2_000
    assert counting.global_failures(300) == 3_000, "the global count is kept"
