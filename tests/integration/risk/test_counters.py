"""Signal counters on PostgreSQL: each replica counts in memory, adds its deltas to
the shared counters in batches, and reads every replica's totals back; decisions
are in the database once an assessment has answered."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.risk.domain.outcomes import OutcomeEvent
from services.risk.domain.policy import Policy
from services.risk.domain.rules import RuleBook, Verdict
from services.risk.domain.tallies import Batch, CellDelta
from services.risk.domain.windows import BUCKET_SECONDS, LoginWindows, bucket_of, window_start
from services.risk.jobs import decision_log
from services.risk.storage import counters, outcomes
from services.risk.use_cases.assessments import Assessments, LoginCommand
from services.risk.use_cases.counting import Counting

WALLET = "0190f5a4-0000-7000-8000-000000000001"
ACCOUNT = "0190f5a4-0000-7000-8000-0000000000aa"


class InForce:
    policy = Policy()
    rules = RuleBook()


def replica(pool: asyncpg.Pool, now: datetime | None = None) -> Counting:
    """One replica's counting on the shared database (``now`` fixed, or the real clock)."""
    store = counters.CounterStore(pool)
    return Counting(store, store, InForce(), clock=(lambda: now) if now else _now)


def _now() -> datetime:
    return datetime.now(UTC)


def failure(ip: str, at: datetime, account_id: str = "") -> OutcomeEvent:
    return OutcomeEvent(
        outcome="password_wrong", decision_id="", account_id=account_id, wallet_id="",
        payer_id="", session_id="", ip=ip, device_id="", amount_minor=0, currency="",
        movement_id="", identifier_hash="", occurred_at=at, subnet=ip.rsplit(".", 1)[0] + ".0/24",
    )  # fmt: skip


async def login(
    counting: Counting, ip: str, identifier: str, now: datetime, account_id: str = "",
    device_id: str = "", known_device: bool = False,
):  # fmt: skip
    return await counting.login(
        ip=ip, subnet=ip.rsplit(".", 1)[0] + ".0/24", device_id=device_id,
        known_device=known_device, account_id=account_id, identifier=identifier,
        unknown=not account_id, windows=LoginWindows.of(now, RuleBook()),
    )  # fmt: skip


async def test_two_replicas_see_each_others_counts_after_a_flush(pool):
    now = datetime.now(UTC)
    one, two = replica(pool, now), replica(pool, now)
    for n in range(3):
        await login(one, "203.0.113.7", f"h-{n}", now)
        one.outcome(failure("203.0.113.7", now, ACCOUNT))
    for _ in range(2):  # hot on this replica too: counted more than once
        await login(two, "203.0.113.7", "h-9", now, ACCOUNT)
    await one.sync()
    await two.sync()
    seen = await login(two, "203.0.113.7", "h-3", now, ACCOUNT)
    assert (seen.ip_failures, seen.subnet_failures, seen.account_failures) == (3, 3, 3)
    assert (seen.global_failures, seen.global_attempts, seen.global_unknown_attempts) == (3, 5, 3)
    assert seen.ip_distinct_identifiers == 5, "h-0..h-3 and h-9, each once"
    await two.sync()
    # A key is read again once this replica counts on it: its keys, not everyone's.
    await login(one, "203.0.113.7", "h-3", now)
    await one.sync()
    back = await login(one, "203.0.113.7", "h-0", now)
    assert (back.global_attempts, back.ip_distinct_identifiers) == (7, 5)


async def test_a_replica_reads_another_replicas_counts_once_the_key_is_hot_there(pool):
    now = datetime.now(UTC)
    one, two = replica(pool, now), replica(pool, now)
    for _ in range(4):
        one.outcome(failure("198.51.100.4", now))
    await one.sync()
    first = await login(two, "198.51.100.4", "h-1", now)
    assert first.ip_failures == 0, "a key new to this replica starts from its own counts"
    await login(two, "198.51.100.4", "h-1", now)
    await two.sync()
    assert (await login(two, "198.51.100.4", "h-1", now)).ip_failures == 4


async def test_failed_sign_ins_reach_the_shared_counters_and_the_stuffing_signal(pool):
    now = datetime.now(UTC)
    one = replica(pool, now)
    await outcomes.record_outcome(pool, failure("203.0.113.7", now, ACCOUNT))
    one.outcome(failure("203.0.113.7", now, ACCOUNT))
    one.outcome(failure("203.0.113.8", now))
    assert one.global_failures(300) == 2
    await one.sync()
    assert await counters.global_failures_since(pool, bucket_of(now)) == 2
    rows = await pool.fetch(
        "select dimension, key, failures from counters where dimension <> 'global'"
        " order by dimension, key"
    )
    assert [tuple(r) for r in rows] == [
        ("account", ACCOUNT, 1), ("ip", "203.0.113.7", 1), ("ip", "203.0.113.8", 1),
        ("subnet", "203.0.113.0/24", 2),
    ]  # fmt: skip


async def test_a_failed_flush_keeps_the_counts_for_the_next_one(pool):
    now = datetime.now(UTC)
    one = replica(pool, now)
    one.outcome(failure("203.0.113.7", now))
    await pool.execute("alter table counters rename to counters_away")
    try:
        with pytest.raises(asyncpg.PostgresError):
            await one.sync()
        assert one.global_failures(300) == 1, "not lost, not doubled"
    finally:
        await pool.execute("alter table counters_away rename to counters")
    await one.sync()
    assert one.global_failures(300) == 1
    assert await counters.global_failures_since(pool, bucket_of(now)) == 1


async def test_the_last_sign_in_country_of_a_known_account_is_read_with_the_counts(pool):
    then = datetime.now(UTC) - timedelta(minutes=5)
    await outcomes.record_outcome(
        pool,
        OutcomeEvent(
            outcome="login_succeeded", decision_id="", account_id=ACCOUNT, wallet_id="",
            payer_id="", session_id="s-1", ip="133.1.2.3", device_id="d-1", amount_minor=0,
            currency="", movement_id="", identifier_hash="", occurred_at=then,
            subnet="133.1.2.0/24", country="JP",
        ),
    )  # fmt: skip
    counting = replica(pool)
    seen = await login(counting, "198.51.100.1", "h-1", datetime.now(UTC), ACCOUNT)
    assert (seen.previous_login_country, seen.previous_login_at) == ("JP", then)
    stranger = await login(counting, "198.51.100.1", "h-2", datetime.now(UTC))
    assert stranger.previous_login_country is None


async def test_concurrent_sign_ins_are_each_counted_once(pool):
    now = datetime.now(UTC)
    counting = replica(pool, now)
    await asyncio.gather(
        *(login(counting, "203.0.113.9", f"h-{i}", now, ACCOUNT) for i in range(20))
    )
    await counting.sync()
    last = await login(counting, "203.0.113.9", "h-last", now)
    assert last.global_attempts == 20
    assert last.ip_distinct_identifiers == 21
    stored = await pool.fetchval(
        "select sum(attempts) from counters where dimension = 'account' and key = $1", ACCOUNT
    )
    assert stored == 20


async def test_a_device_trying_many_accounts_is_counted_unless_it_is_theirs(pool):
    now = datetime.now(UTC)
    one, two = replica(pool, now), replica(pool, now)
    for n in range(3):
        await login(one, f"100.64.{n}.9", f"h-{n}", now, device_id="bot-1")
        await login(one, f"100.65.{n}.9", f"owner-{n}", now, device_id="tablet", known_device=True)
    await one.sync()
    await login(two, "100.66.0.9", "h-9", now, device_id="bot-1")
    await login(two, "100.66.1.9", "h-9", now, device_id="bot-1")
    await two.sync()
    seen = await login(two, "100.66.0.9", "h-10", now, device_id="bot-1")
    assert seen.device_distinct_identifiers == 5
    family = await login(two, "100.66.0.9", "owner-3", now, device_id="tablet", known_device=True)
    assert family.device_distinct_identifiers == 0


async def test_events_before_the_window_are_not_counted(pool):
    now = datetime.now(UTC)
    window = RuleBook().window("registration.ip_velocity")
    old = bucket_of(now - timedelta(seconds=window + 2 * BUCKET_SECONDS))
    counting = replica(pool, now)

    async def register(bucket: int) -> int:
        return await counting.registration(
            ip="203.0.113.7", bucket=bucket, since_bucket=window_start(now, window)
        )

    assert await register(old) == 0
    assert await register(bucket_of(now)) == 0, "the old one is outside the window"
    assert await register(bucket_of(now)) == 1


async def test_top_up_signals_read_the_wallets_count_and_the_sessions_credential_change(pool):
    now = datetime.now(UTC)
    changed = now - timedelta(minutes=3)
    for outcome, at in (
        ("login_succeeded", now - timedelta(hours=1)),
        ("credential_changed", changed),
    ):
        await outcomes.record_outcome(
            pool,
            OutcomeEvent(
                outcome=outcome, decision_id="", account_id=ACCOUNT, wallet_id="", payer_id="",
                session_id="s-1", ip="133.1.2.3", device_id="d-1", amount_minor=0, currency="",
                movement_id="", identifier_hash="", occurred_at=at,
            ),
        )  # fmt: skip
    counting = replica(pool, now)

    async def top_up(session_id: str) -> tuple[int, datetime | None]:
        return await counting.top_up(
            wallet_id=WALLET, session_id=session_id, bucket=bucket_of(now),
            since_bucket=bucket_of(now) - 10,
        )  # fmt: skip

    assert await top_up("s-1") == (0, changed)
    assert await top_up("s-1") == (1, changed)
    assert await top_up("other") == (2, None)


async def test_payment_signals_know_a_top_up_from_a_device_new_to_the_account(pool):
    start = datetime.now(UTC) - timedelta(days=1)
    base = dict(
        decision_id="", account_id=ACCOUNT, wallet_id="", payer_id="", ip="133.1.2.3",
        amount_minor=0, currency="", movement_id="", identifier_hash="",
    )  # fmt: skip
    await outcomes.record_outcome(
        pool,
        OutcomeEvent(outcome="login_succeeded", session_id="s-old", device_id="old-phone",
                     occurred_at=start, **base),  # type: ignore[arg-type]
    )  # fmt: skip
    now = datetime.now(UTC)
    await outcomes.record_outcome(
        pool,
        OutcomeEvent(outcome="login_succeeded", session_id="s-new", device_id="new-phone",
                     occurred_at=now - timedelta(minutes=2), **base),  # type: ignore[arg-type]
    )  # fmt: skip
    bucket = bucket_of(now)
    counting = replica(pool, now)
    assert await counting.payment(wallet_id=WALLET, bucket=bucket, since_bucket=bucket) == (
        0,
        None,
        False,
    )
    topped = now - timedelta(minutes=1)
    await outcomes.record_outcome(
        pool,
        OutcomeEvent(
            outcome="top_up_completed", decision_id="", account_id=ACCOUNT, wallet_id=WALLET,
            payer_id="p", session_id="s-new", ip="133.1.2.3", device_id="new-phone",
            amount_minor=5000, currency="JPY", movement_id="m-1", identifier_hash="",
            occurred_at=topped,
        ),
    )  # fmt: skip
    assert await counting.payment(wallet_id=WALLET, bucket=bucket, since_bucket=bucket) == (
        1,
        topped,
        True,
    )


async def test_purging_forgets_counters_older_than_any_window(pool):
    now = datetime.now(UTC)
    ancient = now - timedelta(seconds=counters.COUNTER_RETENTION_SECONDS + 60)
    await counters.add_counts(
        pool,
        Batch(
            cells=tuple(
                CellDelta("registration_ip", "ip", bucket_of(when), 1, 0, 0)
                for when in (ancient, now)
            ),
            identifiers=(),
        ),
    )
    await counters.purge_old_counters(pool, now)
    assert await pool.fetchval("select count(*) from counters") == 1


async def test_a_decision_is_in_the_database_when_the_sign_in_assessment_answers(pool):
    log = decision_log(pool, max_wait=0.002)
    assessments = Assessments(
        in_force=InForce(), signals=replica(pool), decisions=log, countries=lambda ip: "JP"
    )
    command = LoginCommand(
        ip="133.1.2.3", account_id=ACCOUNT, device_id="d-1", identifier_hash="h-1",
        known_device=True, method="password",
    )  # fmt: skip
    answered = await asyncio.gather(*(assessments.login(command) for _ in range(30)))
    stored = await pool.fetch("select decision_id, verdict from decisions")
    assert {(r["decision_id"], r["verdict"]) for r in stored} == {
        (d.decision_id, Verdict.ALLOW.name) for d in answered
    }
    inputs = await pool.fetchval(
        "select inputs from decisions where decision_id = $1", answered[0].decision_id
    )
    assert inputs["signals"]["device_distinct_identifiers"] == 0
