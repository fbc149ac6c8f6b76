"""Signal counters on PostgreSQL: each assessment counts itself and reads its windows
in one statement; counts are as they stood before the event, windows end now."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from services.risk.domain.outcomes import OutcomeEvent
from services.risk.domain.rules import RuleBook
from services.risk.domain.windows import BUCKET_SECONDS, LoginWindows, bucket_of, window_start
from services.risk.storage import counters, outcomes

WALLET = "0190f5a4-0000-7000-8000-000000000001"
ACCOUNT = "0190f5a4-0000-7000-8000-0000000000aa"


def failure(ip: str, at: datetime, account_id: str = "") -> OutcomeEvent:
    return OutcomeEvent(
        outcome="password_wrong", decision_id="", account_id=account_id, wallet_id="",
        payer_id="", session_id="", ip=ip, device_id="", amount_minor=0, currency="",
        movement_id="", identifier_hash="", occurred_at=at, subnet=ip.rsplit(".", 1)[0] + ".0/24",
    )  # fmt: skip


async def login(pool: asyncpg.Pool, ip: str, identifier: str, now: datetime, account_id: str = ""):
    return await counters.login_signals(
        pool, ip=ip, subnet=ip.rsplit(".", 1)[0] + ".0/24", account_id=account_id,
        identifier=identifier, unknown=not account_id, windows=LoginWindows.of(now, RuleBook()),
    )  # fmt: skip


async def test_failed_sign_ins_count_for_the_ip_its_subnet_the_account_and_everyone(pool):
    now = datetime.now(UTC)
    await outcomes.record_outcome(pool, failure("203.0.113.7", now, ACCOUNT))
    await outcomes.record_outcome(pool, failure("203.0.113.8", now))
    seen = await login(pool, "203.0.113.7", "h-1", now, ACCOUNT)
    assert (seen.ip_failures, seen.subnet_failures, seen.account_failures) == (1, 2, 1)
    assert seen.global_failures == 2
    assert await counters.global_failures_since(pool, bucket_of(now)) == 2


async def test_a_sign_in_attempt_counts_itself_after_reading_the_window(pool):
    now = datetime.now(UTC)
    first = await login(pool, "203.0.113.7", "h-1", now)
    second = await login(pool, "203.0.113.7", "h-2", now)
    assert (first.global_attempts, second.global_attempts) == (0, 1)
    assert (first.global_unknown_attempts, second.global_unknown_attempts) == (0, 1)
    # The distinct-identifier count includes the attempt being assessed.
    assert (first.ip_distinct_identifiers, second.ip_distinct_identifiers) == (1, 2)


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
    seen = await login(pool, "198.51.100.1", "h-1", datetime.now(UTC), ACCOUNT)
    assert (seen.previous_login_country, seen.previous_login_at) == ("JP", then)
    stranger = await login(pool, "198.51.100.1", "h-2", datetime.now(UTC))
    assert stranger.previous_login_country is None


async def test_concurrent_sign_ins_are_each_counted_once(pool):
    now = datetime.now(UTC)
    await asyncio.gather(*(login(pool, "203.0.113.9", f"h-{i}", now) for i in range(20)))
    last = await login(pool, "203.0.113.9", "h-last", now)
    assert last.global_attempts == 20
    assert last.ip_distinct_identifiers == 21


async def test_events_before_the_window_are_not_counted(pool):
    now = datetime.now(UTC)
    window = RuleBook().window("registration.ip_velocity")
    old = bucket_of(now - timedelta(seconds=window + 2 * BUCKET_SECONDS))

    async def register(bucket: int) -> int:
        return await counters.count_and_read(
            pool, dimension="registration_ip", key="203.0.113.7", bucket=bucket,
            since_bucket=window_start(now, window),
        )  # fmt: skip

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

    async def top_up(session_id: str) -> tuple[int, datetime | None]:
        return await counters.top_up_signals(
            pool, wallet_id=WALLET, session_id=session_id, bucket=bucket_of(now),
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
    assert await counters.payment_signals(
        pool, wallet_id=WALLET, bucket=bucket, since_bucket=bucket
    ) == (0, None, False)
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
    assert await counters.payment_signals(
        pool, wallet_id=WALLET, bucket=bucket, since_bucket=bucket
    ) == (1, topped, True)


async def test_purging_forgets_counters_older_than_any_window(pool):
    now = datetime.now(UTC)
    ancient = now - timedelta(seconds=counters.COUNTER_RETENTION_SECONDS + 60)
    for when in (ancient, now):
        await counters.count_and_read(
            pool, dimension="registration_ip", key="ip", bucket=bucket_of(when), since_bucket=0
        )
    await counters.purge_old_counters(pool, now)
    assert await pool.fetchval("select count(*) from counters") == 1
