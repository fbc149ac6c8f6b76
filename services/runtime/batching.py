"""Group commit: items submitted at about the same time are written in one call, and
each submitter is answered once the write holding its item has finished.

A caller that is answered knows its item is stored, yet the database sees one
statement per batch instead of one per item. The first item of a batch waits at
most ``max_wait`` seconds for company (less once ``max_items`` are queued). One
write runs at a time: items arriving while it runs form the next batch, so
batches grow with the load rather than the number of writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


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
        self._items: list[T] = []
        self._written: asyncio.Future[None] | None = None
        self._full = asyncio.Event()
        self._one_at_a_time = asyncio.Lock()
        self._running: set[asyncio.Task[None]] = set()

    async def add(self, item: T) -> None:
        """Write ``item`` with the others submitted meanwhile; raises what the write raised."""
        written = self._written
        if written is None:
            written = self._written = asyncio.get_running_loop().create_future()
            # Nobody may be left to read a failure (every caller gave up waiting).
            written.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._full = asyncio.Event()
            task = asyncio.create_task(self._run(self._full))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        self._items.append(item)
        if len(self._items) >= self._max_items:
            self._full.set()
        # A caller that stops waiting (a deadline) leaves its item in the batch.
        await asyncio.shield(written)

    async def drain(self) -> None:
        """Wait until every item submitted so far is written (or its write failed)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _run(self, full: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._max_wait):
                await full.wait()
        async with self._one_at_a_time:
            items, written = self._items, self._written
            self._items, self._written = [], None
            assert written is not None
            try:
                await self._write(items)
            except BaseException as error:
                written.set_exception(error)
                if not isinstance(error, Exception):
                    raise
            else:
                written.set_result(None)
