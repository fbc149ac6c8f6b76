"""A leased retry queue in a PostgreSQL table: claim what is due, attempt it, record the outcome.

The outbox relay and notify's deliveries are both this queue. Each pass claims
up to a batch of due rows with ``FOR UPDATE SKIP LOCKED`` and a lease (the row's
``available_at`` moves to the end of the lease, under a fresh lease token), so
several processes share the work and a row whose holder died is claimed again
once its lease ends. A failed attempt is retried after an exponential, jittered
backoff; after the last attempt the row is dead, kept for operators. A row whose
holder died during its last attempt is given up once that lease ends.

A queue's table has, besides its key and state columns, ``attempts int``,
``available_at timestamptz``, ``lease_token uuid`` and ``last_error text``.

A pass is two round trips whatever the batch size: one transaction claims (and
gives up orphans), one statement records the outcomes; a handler may take the
whole batch at once. Passes run when an item is announced (``wake``, or NOTIFY
on a channel), when the next retry falls due, and otherwise every poll interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import asyncpg
import structlog

from services.runtime.db import session_connection
from services.runtime.jobs import Background, any_of, every
from services.runtime.outages import OutageLog

T = TypeVar("T")

_ERROR_TEXT_LIMIT = 2000
# The shortest wait between passes, so rows another process is claiming right
# now cannot make this one spin.
MIN_WAIT_SECONDS = 0.05
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

_log = structlog.get_logger(__name__)

Attempt = Callable[[T], Awaitable[None]]
AttemptBatch = Callable[[Sequence[T]], Awaitable[Sequence[BaseException | None]]]
FailureHook = Callable[[T, str, bool, float], None]


def backoff_seconds(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Delay before retrying after failed attempt number ``attempt`` (1-based).

    Exponential in the attempt, capped, with the upper half jittered so that
    items failing together do not retry together.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 62))
    return ceiling / 2 + (rng or _jitter).uniform(0, ceiling / 2)


_jitter = random.Random()  # noqa: S311 - spreading retries needs no cryptographic randomness


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a queue's items are attempted."""

    max_attempts: int = 10
    base_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 600.0
    lease_seconds: float = 30.0
    # None: half the lease.
    attempt_timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.attempt_timeout < self.lease_seconds:
            # An attempt outliving its lease would let a second holder attempt
            # the same row at the same time.
            raise ValueError("the attempt timeout must be positive and below lease_seconds")
        if not 0 < self.base_backoff_seconds <= self.max_backoff_seconds:
            raise ValueError("backoff must satisfy 0 < base_backoff_seconds <= max_backoff_seconds")

    @property
    def attempt_timeout(self) -> float:
        if self.attempt_timeout_seconds is None:
            return self.lease_seconds / 2
        return self.attempt_timeout_seconds

    def retry_in(self, attempts: int) -> float:
        return backoff_seconds(
            attempts, base=self.base_backoff_seconds, cap=self.max_backoff_seconds
        )


@dataclasses.dataclass(frozen=True)
class LeasedTable(Generic[T]):
    """Where a queue's rows live, how their states are named, and what a claim reads.

    The names are the code's own constants, never input: they are written into SQL.
    """

    name: str
    # What a claim returns besides the key, as select items over the table (alias ``q``)
    # and ``join`` (extra FROM items, with their conditions in ``join_on``).
    columns: str
    # Builds the item handed to the handler from a claimed row and its lease token.
    read: Callable[[asyncpg.Record, uuid.UUID], T]
    key: str = "id"
    key_type: str = "bigint"
    state: str = "state"
    # States of a row not finished yet: waiting for an attempt or being attempted.
    waiting: tuple[str, ...] = ("pending",)
    # The state after a failed attempt that will be retried, and after the last one.
    retry: str = "pending"
    dead: str = "dead"
    # The state a successful attempt records, with more assignments; None when the
    # handler records its own outcome.
    done: str | None = None
    done_set: str = ""
    # Claim order among rows due at the same moment.
    tiebreak: str = "id"
    join: str = ""
    join_on: str = ""
    # A jsonb column rewritten by ``QueueWork.keep`` once a row is done or dead.
    kept: str | None = None
    # Who holds a claim, as the give-up message names it.
    holder: str = "relay"

    def __post_init__(self) -> None:
        names = [self.name, self.key, self.key_type, self.state, self.retry, self.dead]
        names += [*self.waiting, self.done or "done", self.tiebreak, self.kept or "kept"]
        names.append(self.holder)
        for name in names:
            if not _NAME.match(name):
                raise ValueError(f"{name!r} is not a plain SQL name")

    @property
    def _waiting(self) -> str:
        return ", ".join(f"'{state}'" for state in self.waiting)

    def claim_sql(self) -> str:
        kept = f", q.{self.kept}::text as queue_kept" if self.kept else ""
        join = f", {self.join}" if self.join else ""
        join_on = f" and {self.join_on}" if self.join_on else ""
        return f"""
            with due as (
                select {self.key} from {self.name}
                where {self.state} in ({self._waiting}) and available_at <= now()
                  and attempts < $1
                order by available_at, {self.tiebreak}
                limit $2
                for update skip locked
            )
            update {self.name} q
            set attempts = q.attempts + 1,
                available_at = now() + make_interval(secs => $3),
                lease_token = $4
            from due{join}
            where q.{self.key} = due.{self.key}{join_on}
            returning q.{self.key} as queue_key, q.attempts as queue_attempts{kept},
                      {self.columns}
        """  # noqa: S608 - names are the code's constants, checked in __post_init__

    def give_up_sql(self) -> str:
        kept = f", {self.kept}::text as queue_kept" if self.kept else ""
        return f"""
            update {self.name}
            set {self.state} = '{self.dead}', lease_token = null,
                last_error = 'the {self.holder} stopped during attempt ' || attempts
                    || ' and no attempts are left'
            where {self.state} in ({self._waiting}) and available_at <= now()
              and attempts >= $1
            returning {self.key} as queue_key{kept}
        """  # noqa: S608 - names are the code's constants, checked in __post_init__

    def keep_sql(self) -> str:
        return f"update {self.name} set {self.kept} = $2::text::jsonb where {self.key} = $1"  # noqa: S608

    def done_sql(self) -> str:
        extra = f", {self.done_set}" if self.done_set else ""
        if self.kept:
            return f"""
                update {self.name} q
                set {self.state} = '{self.done}', lease_token = null{extra},
                    {self.kept} = coalesce(k.kept::jsonb, q.{self.kept})
                from unnest($1::{self.key_type}[], $2::text[]) as k(key, kept)
                where q.{self.key} = k.key and q.{self.state} <> '{self.done}'
            """  # noqa: S608 - names are the code's constants, checked in __post_init__
        return f"""
            update {self.name}
            set {self.state} = '{self.done}', lease_token = null{extra}
            where {self.key} = any($1::{self.key_type}[]) and {self.state} <> '{self.done}'
        """  # noqa: S608 - names are the code's constants, checked in __post_init__

    def failed_sql(self) -> str:
        kept = (
            f", {self.kept} = case when f.dead then coalesce(f.kept::jsonb, q.{self.kept})"
            f" else q.{self.kept} end"
            if self.kept
            else ""
        )
        return f"""
            update {self.name} q
            set {self.state} = case when f.dead then '{self.dead}' else '{self.retry}' end,
                available_at = case when f.dead then q.available_at
                                    else now() + make_interval(secs => f.delay) end,
                last_error = f.error,
                lease_token = null{kept}
            from unnest($1::{self.key_type}[], $2::text[], $3::bool[], $4::float8[], $5::text[])
                as f(key, error, dead, delay, kept)
            where q.{self.key} = f.key and q.lease_token = $6
              and q.{self.state} in ({self._waiting})
        """  # noqa: S608 - names are the code's constants, checked in __post_init__

    def next_due_sql(self) -> str:
        return (
            "select extract(epoch from min(available_at) - now())::float8"  # noqa: S608
            f" from {self.name} where {self.state} in ({self._waiting})"
        )


@dataclasses.dataclass(frozen=True)
class _Claimed(Generic[T]):
    key: Any
    attempts: int
    item: T
    kept: str | None


class LeasedQueue(Generic[T]):
    """Attempts the due rows of ``table``: give ``attempt`` (one item at a time, each
    under the attempt timeout) or ``attempt_batch`` (the whole claim at once, under
    the timeout, answering an outcome per item: None when it succeeded).

    ``keep`` maps the ``kept`` column's text to what it becomes once the row is
    done or dead (None: unchanged). ``failed`` hears of each failed attempt after
    it is recorded, with the error text, whether the row is now dead, and the
    retry delay. With ``channel``, a NOTIFY on it wakes the queue, heard on a
    connection of its own.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        table: LeasedTable[T],
        retry: RetryPolicy,
        *,
        attempt: Attempt[T] | None = None,
        attempt_batch: AttemptBatch[T] | None = None,
        keep: Callable[[str], str | None] | None = None,
        failed: FailureHook[T] | None = None,
        describe: Callable[[BaseException], str] | None = None,
        batch_size: int = 100,
        poll_seconds: float = 2.0,
        channel: str | None = None,
        event: str = "queue.error",
        what: str = "delivery",
    ) -> None:
        if (attempt is None) == (attempt_batch is None):
            raise ValueError("give exactly one of attempt and attempt_batch")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if poll_seconds <= 0:
            raise ValueError("poll_seconds must be positive")
        self._pool = pool
        self._table = table
        self._retry = retry
        self._attempt = attempt
        self._attempt_batch = attempt_batch
        self._keep = keep
        self._failed = failed
        self._describe = describe or _describe
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._channel = channel
        self._event = event
        self._what = what
        self._wake = asyncio.Event()
        self._next_wait = 0.0
        self._claim_sql = table.claim_sql()
        self._give_up_sql = table.give_up_sql()
        self._failed_sql = table.failed_sql()
        self._done_sql = table.done_sql() if table.done else ""
        self._next_due_sql = table.next_due_sql()

    def wake(self) -> None:
        """Something just became due: look now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Attempt due rows until ``stop`` is set; losing the database is logged and
        retried, never fatal. With a channel the pool needs a spare connection (behind
        a transaction pooler, a direct one) to listen on."""
        outage = OutageLog(_log, self._event)
        if self._channel is None:
            await self._passes(self._pool, outage)(stop)
            return
        await every(
            self._poll_seconds,
            lambda: self._listening(stop, outage),
            log=_log,
            event=self._event,
            outage=outage,
        )(stop)

    async def deliver_due(self) -> int:
        """One pass: claim up to a batch of due rows and attempt each once.

        Returns how many rows were attempted, whatever came of them.
        """
        token, claimed = await self._claim()
        if claimed:
            outcomes = await self._run_attempts([c.item for c in claimed])
            await self._record(token, claimed, outcomes)
        return len(claimed)

    async def seconds_until_next_due(
        self, conn: asyncpg.Pool | asyncpg.Connection | None = None
    ) -> float | None:
        """Seconds until the earliest unfinished row falls due (negative: overdue);
        None when there is none."""
        wait = await (conn or self._pool).fetchval(self._next_due_sql)
        return None if wait is None else float(wait)

    def _passes(self, db: asyncpg.Pool | asyncpg.Connection, outage: OutageLog) -> Background:
        async def one_pass() -> None:
            self._next_wait = self._poll_seconds
            if await self.deliver_due() >= self._batch_size:
                self._next_wait = 0.0
                return
            # The listening connection is otherwise idle, so it also asks when
            # the next retry falls due.
            wait = await self.seconds_until_next_due(db)
            if wait is not None:
                self._next_wait = min(max(wait, MIN_WAIT_SECONDS), self._poll_seconds)

        return every(
            lambda: self._next_wait,
            one_pass,
            log=_log,
            event=self._event,
            wake=self._wake,
            outage=outage,
        )

    async def _listening(self, stop: asyncio.Event, outage: OutageLog) -> None:
        assert self._channel is not None
        lost = asyncio.Event()

        def on_notify(*_: object) -> None:
            self._wake.set()

        def on_lost(_: object) -> None:
            lost.set()

        async with session_connection(self._pool) as listener:
            listener.add_termination_listener(on_lost)
            await listener.add_listener(self._channel, on_notify)
            try:
                async with any_of(stop, lost) as ended:
                    await self._passes(listener, outage)(ended)
            finally:
                listener.remove_termination_listener(on_lost)
                if not listener.is_closed():
                    await listener.remove_listener(self._channel, on_notify)
        if lost.is_set() and not stop.is_set():
            raise ConnectionError("the listening connection was lost")

    async def _claim(self) -> tuple[uuid.UUID, list[_Claimed[T]]]:
        token = uuid.uuid4()
        table = self._table
        async with self._pool.acquire() as conn, conn.transaction():
            orphans = await conn.fetch(self._give_up_sql, self._retry.max_attempts)
            if self._keep is not None and table.kept:
                kept = [
                    (orphan["queue_key"], text)
                    for orphan in orphans
                    if (text := self._keep(orphan["queue_kept"])) is not None
                ]
                if kept:
                    await conn.executemany(table.keep_sql(), kept)
            rows = await conn.fetch(
                self._claim_sql,
                self._retry.max_attempts,
                self._batch_size,
                self._retry.lease_seconds,
                token,
            )
        claimed = [
            _Claimed(
                key=row["queue_key"],
                attempts=row["queue_attempts"],
                item=table.read(row, token),
                kept=self._keep(row["queue_kept"]) if self._keep and table.kept else None,
            )
            for row in rows
        ]
        claimed.sort(key=lambda c: c.key)
        return token, claimed

    async def _run_attempts(self, items: list[T]) -> Sequence[BaseException | None]:
        timeout = self._retry.attempt_timeout
        timed_out = TimeoutError(f"{self._what} timed out after {timeout:g} seconds")
        if self._attempt_batch is not None:
            try:
                async with asyncio.timeout(timeout):
                    outcomes = list(await self._attempt_batch(items))
            except TimeoutError:
                return [timed_out] * len(items)
            except Exception as error:
                return [error] * len(items)
            if len(outcomes) != len(items):
                wrong = RuntimeError("the batch handler answered for a different number of items")
                return [wrong] * len(items)
            return outcomes
        attempt = self._attempt
        assert attempt is not None

        async def one(item: T) -> BaseException | None:
            try:
                async with asyncio.timeout(timeout):
                    await attempt(item)
            except TimeoutError:
                return timed_out
            except Exception as error:
                # Whatever the handler raised, the row is retried, not lost.
                return error
            return None

        return await asyncio.gather(*(one(item) for item in items))

    async def _record(
        self,
        token: uuid.UUID,
        claimed: list[_Claimed[T]],
        outcomes: Sequence[BaseException | None],
    ) -> None:
        done = [c for c, outcome in zip(claimed, outcomes, strict=True) if outcome is None]
        failures = [
            (c, self._describe(outcome)[:_ERROR_TEXT_LIMIT], c.attempts >= self._retry.max_attempts)
            for c, outcome in zip(claimed, outcomes, strict=True)
            if outcome is not None
        ]
        delays = [0.0 if dead else self._retry.retry_in(c.attempts) for c, _, dead in failures]
        if done and self._done_sql:
            try:
                # Any holder may record success: a late success is still a success.
                if self._table.kept:
                    await self._pool.execute(
                        self._done_sql, [c.key for c in done], [c.kept for c in done]
                    )
                else:
                    await self._pool.execute(self._done_sql, [c.key for c in done])
            except Exception:
                # The lease will end and the rows be attempted again; receivers deduplicate.
                _log.exception(f"{self._event}.record_done_failed", count=len(done))
        if not failures:
            return
        try:
            # Only the lease holder records a failure, so a holder whose lease ran
            # out cannot reschedule a row another holder now has.
            await self._pool.execute(
                self._failed_sql,
                [c.key for c, _, _ in failures],
                [error for _, error, _ in failures],
                [dead for _, _, dead in failures],
                delays,
                [c.kept for c, _, _ in failures],
                token,
            )
        except Exception:
            _log.exception(f"{self._event}.record_failure_failed", count=len(failures))
            return
        if self._failed is not None:
            for (c, error, dead), delay in zip(failures, delays, strict=True):
                self._failed(c.item, error, dead, delay)


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError) and str(error):
        return str(error)
    return f"{type(error).__name__}: {error}"
