"""Background jobs: one way to wait, one periodic loop.

Every service runs work beside its RPCs (a relay, a refresh, a housekeeping
sweep). Each is a ``Background``: a coroutine that runs until the server's stop
event is set. The waiting and the loop live here once, so a job's module says
only what the job does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from services.runtime.outages import OutageLog

Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def wait_for_any(*events: asyncio.Event, seconds: float | None = None) -> bool:
    """Wait until one of ``events`` is set or ``seconds`` pass; True if an event was set."""
    if any(event.is_set() for event in events):
        return True
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True if the job should stop."""
    return await wait_for_any(stop, seconds=seconds)


def every(
    seconds: float | Callable[[], float],
    work: Callable[[], Awaitable[Any]],
    *,
    log: Any,
    event: str,
    first: bool = True,
    wake: asyncio.Event | None = None,
    outage: OutageLog | None = None,
) -> Background:
    """A job that runs ``work`` every ``seconds`` until stopped.

    ``seconds`` may be a callable, read before each pause, for jobs whose rhythm
    depends on what they just found. Failures are logged through ``OutageLog``
    (an outage once, a bug every time) and never end the job. With ``first``
    False the job waits one period before its first run. Setting ``wake`` runs
    the work at once instead of at the end of the pause. ``outage`` shares one
    outage record with an enclosing job, so an outage logged by one is ended by the other.
    """

    def period() -> float:
        return seconds() if callable(seconds) else seconds

    async def run(stop: asyncio.Event) -> None:
        failures = outage or OutageLog(log, event)
        if not first and await _pause(stop, wake, period()):
            return
        while not stop.is_set():
            if wake is not None:
                wake.clear()
            try:
                await work()
            except Exception as error:
                failures.failed(error)
            else:
                failures.ok()
            if await _pause(stop, wake, period()):
                return

    return run


@contextlib.asynccontextmanager
async def any_of(*events: asyncio.Event) -> AsyncIterator[asyncio.Event]:
    """An event that is set as soon as one of ``events`` is, for as long as the block runs."""
    either = asyncio.Event()

    async def follow() -> None:
        await wait_for_any(*events)
        either.set()

    watcher = asyncio.create_task(follow())
    try:
        yield either
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _pause(stop: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> bool:
    if wake is None:
        return await pause(stop, seconds)
    await wait_for_any(stop, wake, seconds=seconds)
    return stop.is_set()
