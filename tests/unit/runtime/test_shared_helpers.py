"""The runtime's shared helpers: paging tokens, timestamps and the periodic job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import structlog

from services.runtime import convert, jobs, paging
from services.runtime.errors import InvalidArgument


def test_a_page_token_gives_back_the_sort_key_it_was_made_from() -> None:
    token = paging.encode("2026-11-28T04:00:00+00:00", "a|b")
    assert paging.decode(token, field="page.page_token", parts=2) == [
        "2026-11-28T04:00:00+00:00",
        "a|b",
    ]


@pytest.mark.parametrize("token", ["not base64!", paging.encode("one"), "", "%%%"])
def test_a_foreign_page_token_is_refused_naming_the_field(token: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        paging.decode(token, field="page.page_token", parts=2)
    assert refused.value.violations == [("page.page_token", "is not a token from this list")]


def test_a_timestamp_round_trips_as_an_aware_utc_moment() -> None:
    moment = datetime(2026, 11, 28, 4, 5, 6, 789000, tzinfo=UTC)
    stamp = convert.timestamp(moment)
    assert stamp is not None
    assert convert.moment(stamp) == moment
    assert convert.timestamp(None) is None


async def test_a_periodic_job_keeps_running_after_a_failure_and_stops_when_asked() -> None:
    runs: list[int] = []
    second_run = asyncio.Event()

    async def work() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("a bug in one run")
        second_run.set()

    stop = asyncio.Event()
    job = jobs.every(0.0, work, log=structlog.get_logger("test"), event="test.failed")
    task = asyncio.create_task(job(stop))
    await second_run.wait()
    stop.set()
    await task
    assert len(runs) >= 2


async def test_waking_a_job_runs_its_work_before_the_period_ends() -> None:
    woken = asyncio.Event()
    runs = 0
    ran_once = asyncio.Event()
    ran_again = asyncio.Event()

    async def work() -> None:
        nonlocal runs
        runs += 1
        (ran_once if runs == 1 else ran_again).set()

    stop = asyncio.Event()
    job = jobs.every(3600.0, work, log=structlog.get_logger("test"), event="t", wake=woken)
    task = asyncio.create_task(job(stop))
    await ran_once.wait()
    woken.set()
    await ran_again.wait()
    stop.set()
    await task


async def test_wait_for_any_says_whether_an_event_came_before_the_time() -> None:
    assert await jobs.wait_for_any(asyncio.Event(), seconds=0.0) is False
    ready = asyncio.Event()
    ready.set()
    assert await jobs.wait_for_any(asyncio.Event(), ready, seconds=None) is True
