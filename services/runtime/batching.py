"""Group commit: items submitted at about the same time are written in one call, and
each submitter is answered once the write holding its item has finished.

A caller that is answered knows its item is stored, yet the database sees one
statement per batch instead of one per item. The first item of a batch waits at
most ``max_wait`` seconds for company (less once ``max_items`` are queued). One
write runs at a time: items arriving while it runs form the next batch, so
batches grow with the load rather than the number of writes, up to
``max_items`` each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class _Batch(Generic[T]):
    """Items waiting to be written together, and the future their submitters await."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self.full = asyncio.Event()
        self.written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Nobody may be left to read a failure (every caller gave up waiting).
        self.written.add_done_callback(lambda f: f.cancelled() or f.exception())


class GroupCommit(Generic[T]):
    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[None]],
        *,
        max_wait: float,
        max_items: int = 500,
    ) -> None:
        self._write = write
        self._max_wait = max_wait
        self._max_items = max_items
        self._open: _Batch[T] | None = None
        self._one_at_a_time = asyncio.Lock()
        self._running: set[asyncio.Task[None]] = set()

    async def add(self, item: T) -> None:
        """Write ``item`` with the others submitted meanwhile; raises what the write raised."""
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        batch.items.append(item)
        if len(batch.items) >= self._max_items:
            # Sealed at its size: later items open the next batch, so a slow write
            # makes more batches waiting their turn, never a larger one.
            self._open = None
            batch.full.set()
        # A caller that stops waiting (a deadline) leaves its item in the batch.
        await asyncio.shield(batch.written)

    async def drain(self) -> None:
        """Wait until every item submitted so far is written (or its write failed)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _run(self, batch: _Batch[T]) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._max_wait):
                await batch.full.wait()
        async with self._one_at_a_time:
            if self._open is batch:
                self._open = None
            try:
                await self._write(batch.items)
            except BaseException as error:
                batch.written.set_exception(error)
                if not isinstance(error, Exception):
                    raise
            else:
                batch.written.set_result(None)
