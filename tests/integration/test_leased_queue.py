"""The runtime's leased retry queue on real PostgreSQL, over a table of its own:
lease expiry, backoff, giving up, batches and wake-ups."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import pytest
import pytest_asyncio

from services.runtime.db import close_pool, create_pool
from services.runtime.queue import LeasedQueue, LeasedTable, RetryPolicy

# A failed job waits in a state of its own, as notify's deliveries do.
JOBS = LeasedTable(
    name="jobs",
    columns="q.name",
    read=lambda row, _token: str(row["name"]),
    waiting=("pending", "failed"),
    retry="failed",
    done="done",
    done_set="done_at = now()",
    holder="worker",
)


@pytest_asyncio.fixture
async def pool(new_database):
    pool = await create_pool(await new_database("queue"), max_size=6)
    await pool.execute(
        """
        create table jobs (
            id bigint generated always as identity primary key,
            name text not null unique,
            state text not null default 'pending',
            attempts int not null default 0,
            available_at timestamptz not null default now(),
            lease_token uuid,
            last_error text,
            done_at timestamptz
        )
        """
    )
    yield pool
    await close_pool(pool)


async def add(pool: asyncpg.Pool, *names: str) -> None:
    await pool.executemany("insert into jobs (name) values ($1)", [(name,) for name in names])


async def job(pool: asyncpg.Pool, name: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "select state, attempts, last_error, lease_token,"
        " extract(epoch from available_at - now())::float8 as due_in"
        " from jobs where name = $1",
        name,
    )


async def make_due(pool: asyncpg.Pool) -> None:
    # Moves retry times instead of sleeping through them.
    await pool.execute("update jobs set available_at = now() where state in ('pending', 'failed')")


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 60) -> None:
    """Wait for database state no event announces, failing after a generous bound."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


def failing(seen: list[str]) -> Callable[[str], Awaitable[None]]:
    async def attempt(name: str) -> None:
        seen.append(name)
        raise ConnectionError("the receiver is away")

    return attempt


async def test_a_row_whose_holder_died_is_claimed_again_once_its_lease_ends(pool) -> None:
    await add(pool, "orphaned")
    entered = asyncio.Event()

    async def hangs(name: str) -> None:
        entered.set()
        await asyncio.Event().wait()

    lease = RetryPolicy(lease_seconds=1.0, attempt_timeout_seconds=0.9)
    first = LeasedQueue(pool, JOBS, lease, attempt=hangs)
    holder = asyncio.create_task(first.deliver_due())
    await entered.wait()
    # The holder dies mid-attempt: nothing is recorded, the lease stays.
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    held = await job(pool, "orphaned")
    assert (held["state"], held["attempts"]) == ("pending", 1)
    assert held["lease_token"] is not None

    done: list[str] = []

    async def records(name: str) -> None:
        done.append(name)

    second = LeasedQueue(pool, JOBS, lease, attempt=records)
    assert await second.deliver_due() == 0, "claimed while another holder's lease ran"
    await eventually(lambda: _claims(second))

    assert done == ["orphaned"]
    after = await job(pool, "orphaned")
    assert (after["state"], after["attempts"], after["lease_token"]) == ("done", 2, None)


async def _claims(queue: LeasedQueue[str]) -> bool:
    return await queue.deliver_due() == 1


async def test_failures_back_off_exponentially_and_the_last_attempt_gives_up(pool) -> None:
    seen: list[str] = []
    failures: list[tuple[str, bool]] = []
    queue = LeasedQueue(
        pool,
        JOBS,
        RetryPolicy(max_attempts=3, base_backoff_seconds=100, max_backoff_seconds=10_000),
        attempt=failing(seen),
        failed=lambda name, error, dead, delay: failures.append((error, dead)),
    )
    await add(pool, "flaky")

    assert await queue.deliver_due() == 1
    first = await job(pool, "flaky")
    assert (first["state"], first["attempts"]) == ("failed", 1)
    assert first["last_error"] == "ConnectionError: the receiver is away"
    assert 50 - 5 <= first["due_in"] <= 100
    assert await queue.deliver_due() == 0, "retried before its backoff ran out"

    await make_due(pool)
    assert await queue.deliver_due() == 1
    second = await job(pool, "flaky")
    assert 100 - 5 <= second["due_in"] <= 200

    await make_due(pool)
    assert await queue.deliver_due() == 1
    last = await job(pool, "flaky")
    assert (last["state"], last["attempts"]) == ("dead", 3)

    await make_due(pool)
    assert await queue.deliver_due() == 0
    assert seen == ["flaky"] * 3
    assert [dead for _, dead in failures] == [False, False, True]


async def test_a_row_whose_holder_died_during_the_last_attempt_is_given_up(pool) -> None:
    seen: list[str] = []
    await add(pool, "last-try")
    await pool.execute("update jobs set attempts = 2, lease_token = gen_random_uuid()")

    queue = LeasedQueue(pool, JOBS, RetryPolicy(max_attempts=2), attempt=failing(seen))
    assert await queue.deliver_due() == 0

    given_up = await job(pool, "last-try")
    assert (given_up["state"], given_up["lease_token"]) == ("dead", None)
    assert given_up["last_error"] == "the worker stopped during attempt 2 and no attempts are left"
    assert seen == []


async def test_a_late_failure_cannot_reschedule_a_row_another_holder_now_has(pool) -> None:
    await add(pool, "raced")

    def blocking(entered: asyncio.Event, release: asyncio.Event, fails: bool):
        async def attempt(name: str) -> None:
            entered.set()
            await release.wait()
            if fails:
                raise ConnectionError("too late")

        return attempt

    slow_in, slow_go, next_in, next_go = (asyncio.Event() for _ in range(4))
    slow = LeasedQueue(
        pool, JOBS, RetryPolicy(lease_seconds=60), attempt=blocking(slow_in, slow_go, True)
    )
    slow_pass = asyncio.create_task(slow.deliver_due())
    await slow_in.wait()
    await make_due(pool)  # as if the slow holder's lease had ended
    taker = LeasedQueue(pool, JOBS, RetryPolicy(), attempt=blocking(next_in, next_go, False))
    next_pass = asyncio.create_task(taker.deliver_due())
    await next_in.wait()
    held = await job(pool, "raced")

    slow_go.set()
    await slow_pass
    untouched = await job(pool, "raced")
    assert (untouched["state"], untouched["attempts"], untouched["last_error"]) == (
        "pending",
        2,
        None,
    )
    assert untouched["lease_token"] == held["lease_token"] is not None

    next_go.set()
    await next_pass
    assert (await job(pool, "raced"))["state"] == "done"


async def test_a_batch_handler_gets_the_whole_claim_and_each_outcome_is_kept(pool) -> None:
    await add(pool, *(f"job-{n}" for n in range(5)))
    batches: list[list[str]] = []

    async def batch(names: Sequence[str]) -> list[BaseException | None]:
        batches.append(list(names))
        return [ValueError("refused") if name == "job-3" else None for name in names]

    queue = LeasedQueue(pool, JOBS, RetryPolicy(), attempt_batch=batch, batch_size=10)
    assert await queue.deliver_due() == 5

    assert batches == [[f"job-{n}" for n in range(5)]]
    states = dict(await pool.fetch("select name, state from jobs"))
    assert states == {**{f"job-{n}": "done" for n in range(5)}, "job-3": "failed"}
    assert (await job(pool, "job-3"))["last_error"] == "ValueError: refused"


async def test_a_batch_that_outlives_the_attempt_timeout_fails_every_item(pool) -> None:
    await add(pool, "a", "b")

    async def hangs(names: Sequence[str]) -> list[BaseException | None]:
        await asyncio.Event().wait()
        return []

    policy = RetryPolicy(lease_seconds=30, attempt_timeout_seconds=0.2)
    assert await LeasedQueue(pool, JOBS, policy, attempt_batch=hangs).deliver_due() == 2

    for name in ("a", "b"):
        stored = await job(pool, name)
        assert (stored["state"], stored["last_error"]) == (
            "failed",
            "delivery timed out after 0.2 seconds",
        )


async def test_a_running_queue_is_woken_rather_than_waiting_for_its_poll(pool) -> None:
    arrived: list[str] = []
    second = asyncio.Event()

    async def records(name: str) -> None:
        arrived.append(name)
        if name == "second":
            second.set()

    # A poll interval far beyond the wait below: only wake() can explain the second run.
    queue = LeasedQueue(pool, JOBS, RetryPolicy(), attempt=records, poll_seconds=600)
    stop = asyncio.Event()
    await add(pool, "first")
    running = asyncio.create_task(queue.run(stop))
    try:
        await eventually(lambda: _is_done(pool, "first"))
        await add(pool, "second")
        queue.wake()
        async with asyncio.timeout(20):
            await second.wait()
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await running
    assert arrived == ["first", "second"]


async def _is_done(pool: asyncpg.Pool, name: str) -> bool:
    return bool((await job(pool, name))["state"] == "done")


def test_a_table_name_that_is_not_a_plain_name_is_refused() -> None:
    with pytest.raises(ValueError, match="plain SQL name"):
        LeasedTable(name="jobs; drop table jobs", columns="q.name", read=lambda r, t: r)


def test_an_attempt_timeout_as_long_as_the_lease_is_refused() -> None:
    with pytest.raises(ValueError, match="below lease_seconds"):
        RetryPolicy(lease_seconds=5, attempt_timeout_seconds=5)


def test_a_queue_needs_exactly_one_handler() -> None:
    async def one(name: str) -> None:
        return None

    async def many(names: Sequence[str]) -> list[BaseException | None]:
        return []

    with pytest.raises(ValueError, match="exactly one"):
        LeasedQueue(object(), JOBS, RetryPolicy())
    with pytest.raises(ValueError, match="exactly one"):
        LeasedQueue(object(), JOBS, RetryPolicy(), attempt=one, attempt_batch=many)
