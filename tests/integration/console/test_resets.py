"""Forced resets started from the console on real PostgreSQL, with identity's
progress stream stood in: progress is kept as it arrives, a console that stops
marks the job as no longer followed, and resuming it carries on to the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest_asyncio
from mamoru.identity.v1 import identity_pb2

from services.console.bootstrap import MIGRATIONS
from services.console.storage import actions as action_store
from services.console.use_cases.operations import STOPPED_FOLLOWING, Operations
from services.runtime.db import close_pool, create_pool
from services.runtime.migrations import migrate

JOB = "5a1b8f2e-6d1c-4a7e-9a53-1f0e2b7c9d40"


@dataclass
class StandInIdentity:
    """Streams a job of ``total`` accounts one at a time, each step when released."""

    total: int = 3
    processed: int = 0
    step: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[identity_pb2.ForceCredentialResetRequest] = field(default_factory=list)

    async def force_reset(
        self, request: identity_pb2.ForceCredentialResetRequest, operator: str
    ) -> AsyncIterator[identity_pb2.ForceCredentialResetResponse]:
        self.requests.append(request)
        yield self.progress()
        while self.processed < self.total:
            await self.step.wait()
            self.step.clear()
            self.processed += 1
            yield self.progress()

    def progress(self) -> identity_pb2.ForceCredentialResetResponse:
        return identity_pb2.ForceCredentialResetResponse(
            job_id=JOB,
            processed=self.processed,
            total=self.total,
            done=self.processed == self.total,
        )


@pytest_asyncio.fixture
async def pool(new_database: Callable[..., Awaitable[str]]) -> AsyncIterator[asyncpg.Pool]:
    opened = await create_pool(await new_database("console"), max_size=4)
    async with opened.acquire() as conn:
        await migrate(conn, "console", MIGRATIONS)
    try:
        yield opened
    finally:
        await close_pool(opened)


async def job_when(pool: asyncpg.Pool, holds: Callable[[Any], bool]) -> Any:
    async with asyncio.timeout(30):
        while True:
            (job,) = await action_store.resets(pool)
            if holds(job):
                return job
            await asyncio.sleep(0.02)


async def test_a_reset_the_console_stopped_following_is_resumed_to_the_end(
    pool: asyncpg.Pool,
) -> None:
    identity = StandInIdentity()
    operations = Operations(pool, identity)  # type: ignore[arg-type]
    assert await operations.start_reset("aiko", ["a", "b", "c"], False, "breach list") == JOB
    identity.step.set()
    await job_when(pool, lambda job: job.processed == 1)

    await operations.close()
    stopped = await job_when(pool, lambda job: job.failure == STOPPED_FOLLOWING)
    assert (stopped.processed, stopped.total, stopped.done) == (1, 3, False)

    resumed = Operations(pool, identity)  # type: ignore[arg-type]
    await resumed.resume_reset("ken", JOB, "carry on")
    assert identity.requests[-1].resume_job_id == JOB
    identity.step.set()
    await job_when(pool, lambda job: job.processed == 2 and job.failure == "")
    identity.step.set()
    done = await job_when(pool, lambda job: job.done)
    assert (done.processed, done.operator) == (3, "aiko")
    actions = [(a.operator, a.action, a.outcome) for a in await action_store.recent(pool)]
    assert actions == [("ken", "reset.resume", "done"), ("aiko", "reset.start", f"started {JOB}")]
    await resumed.close()
