"""Load generators: separate processes, each with its own event loop and channels.

The services and PostgreSQL share two cores with the load, so a generator must
cost little per call: each process opens its channels once, builds requests
before the clock starts, and only awaits calls while it runs. Processes are
spawned (never forked: gRPC does not survive a fork) and start together at a
wall-clock instant chosen by the parent, so their samples share one time axis.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any, TypeVar

import grpc
import uvloop

from services.runtime.tls import load_tls, secure_channel

Spec = TypeVar("Spec")
# How long spawned processes get to import, connect and wait for the common start.
START_DELAY_SECONDS = 4.0


@dataclass(frozen=True)
class Endpoint:
    """Where a service listens and which certificate the generator presents to it."""

    service: str
    address: str
    tls_dir: str
    principal: str

    def channel(self) -> grpc.aio.Channel:
        return secure_channel(
            self.address, load_tls(Path(self.tls_dir), self.principal), server_name=self.service
        )


class Progress:
    """Counters a generator process bumps and the parent reads while it runs."""

    def __init__(self, ok: Synchronized[int], failed: Synchronized[int]) -> None:
        self._ok = ok
        self._failed = failed

    def ok(self, count: int = 1) -> None:
        self._ok.value += count

    def failed(self, count: int = 1) -> None:
        self._failed.value += count


def _child(
    entry: Callable[[Any, Progress], Coroutine[Any, Any, Any]],
    spec: Any,
    index: int,
    ok: Synchronized[int],
    failed: Synchronized[int],
    results: multiprocessing.Queue[tuple[int, Any]],
) -> None:
    outcome: Any
    try:
        # uvloop, as the services: the generators' own CPU is a share of the machine.
        outcome = uvloop.run(entry(spec, Progress(ok, failed)))
    except BaseException as error:
        outcome = RuntimeError(f"generator {index} failed: {type(error).__name__}: {error}")
    results.put((index, outcome))


async def run_generators(
    entry: Callable[[Spec, Progress], Coroutine[Any, Any, Any]],
    specs: Sequence[Spec],
    *,
    label: str,
    seconds: float,
    rate_label: str = "ok/s",
) -> list[Any]:
    """Run ``entry(spec, progress)`` in one process per spec; print progress every
    few seconds; return each process's result in spec order.

    The parent's event loop keeps running meanwhile (it serves the local SMTP
    server and card processor of the stack).
    """
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[tuple[int, Any]] = context.Queue()
    counters = [
        (context.Value("q", 0, lock=False), context.Value("q", 0, lock=False)) for _ in specs
    ]
    processes = [
        context.Process(
            target=_child,
            args=(entry, spec, index, ok, failed, results),
            name=f"bench-{label}-{index}",
            daemon=True,
        )
        for index, (spec, (ok, failed)) in enumerate(zip(specs, counters, strict=True))
    ]
    for process in processes:
        process.start()
    started = time.monotonic()
    collected: dict[int, Any] = {}
    last_ok, last_at, next_print = 0, started, started + 2.0
    try:
        while len(collected) < len(processes):
            try:
                index, outcome = await asyncio.to_thread(results.get, True, 0.5)
                collected[index] = outcome
            except queue.Empty:
                pass
            if len(collected) < len(processes) and all(
                not p.is_alive() for i, p in enumerate(processes) if i not in collected
            ):
                # A process that put its result and exited may still have it in the
                # pipe: drain what is there before calling any process dead.
                try:
                    while len(collected) < len(processes):
                        index, outcome = await asyncio.to_thread(results.get, True, 5.0)
                        collected[index] = outcome
                except queue.Empty:
                    raise RuntimeError(
                        f"{label}: a generator process died without a result"
                    ) from None
                break
            now = time.monotonic()
            if now >= next_print:
                ok = sum(c[0].value for c in counters)
                failed = sum(c[1].value for c in counters)
                rate = (ok - last_ok) / (now - last_at)
                print(
                    f"    {label}: {now - started:5.0f}s of ~{seconds + START_DELAY_SECONDS:.0f}s"
                    f"  {ok:>9,} ok  {failed:>7,} failed  {rate:>8,.0f} {rate_label}",
                    flush=True,
                )
                last_ok, last_at, next_print = ok, now, now + 5.0
    finally:
        for process in processes:
            await asyncio.to_thread(process.join, 10)
            if process.is_alive():
                process.kill()
    ordered = [collected[i] for i in range(len(processes))]
    for outcome in ordered:
        if isinstance(outcome, Exception):
            raise outcome
    return ordered


async def wait_until(moment: float) -> None:
    """Sleep until the wall-clock ``moment`` shared by every generator process."""
    delay = moment - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def open_loop(
    *,
    rate: float,
    seconds: float,
    start_at: float,
    call: Callable[[int, float], Coroutine[Any, Any, None]],
    max_in_flight: int,
) -> int:
    """Start ``call(i, scheduled_start)`` at ``rate`` per second for ``seconds``.

    The schedule does not wait for answers (an attacker or a crowd does not), but
    at most ``max_in_flight`` calls are outstanding: when the system falls that
    far behind, calls due are skipped and counted, so the achieved rate shows it.
    Returns how many were skipped.
    """
    await wait_until(start_at)
    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * seconds)
    sent = skipped = 0
    while sent + skipped < total:
        now = time.time()
        due = min(total, int((now - start_at) * rate) + 1)
        while sent + skipped < due:
            index = sent + skipped
            if len(tasks) >= max_in_flight:
                skipped += 1
                continue
            task = asyncio.create_task(call(index, start_at + index / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        next_due = start_at + (sent + skipped) / rate
        await asyncio.sleep(max(0.0, min(next_due - time.time(), 0.05)))
    if tasks:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
    return skipped


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """A short reason for the error tally: the status code and, for refusals, the detail."""
    return status_reason(error.code(), error.details())


def status_reason(code: grpc.StatusCode, details: str | None) -> str:
    """``error_reason`` for a status read off a call instead of raised."""
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED):
        return f"{code.name}: {str(details or '')[:60]}"
    return str(code.name)
