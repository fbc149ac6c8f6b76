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
import contextvars
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

from opentelemetry import trace

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


K = TypeVar("K")
V = TypeVar("V")


class BatchedLookup(Generic[K, V]):
    """Look-ups by key asked in the same turn of the event loop, answered by one query.

    ``fetch`` receives the distinct keys asked (at most ``max_keys`` at a time) and
    returns what it found; a key it did not return is answered ``missing``. A
    caller alone pays one loop turn more than a direct query; many callers at
    once (the items of a batch call, assessed together) pay one query between
    them. Written here because the loaders that do this (DataLoader and its
    ports) bring a framework with them for a dozen lines.
    """

    def __init__(
        self,
        fetch: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]],
        *,
        missing: V,
        max_keys: int = 500,
    ) -> None:
        self._fetch = fetch
        self._missing = missing
        self._max_keys = max_keys
        self._asked: dict[K, asyncio.Future[V]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V:
        answer = self._asked.get(key)
        if answer is None:
            if not self._asked:
                asyncio.get_running_loop().call_soon(self._dispatch)
            answer = self._asked[key] = asyncio.get_running_loop().create_future()
            if len(self._asked) >= self._max_keys:
                self._dispatch()
        return await asyncio.shield(answer)

    def _dispatch(self) -> None:
        asked, self._asked = self._asked, {}
        if not asked:
            return
        task = asyncio.create_task(self._answer(asked))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, asked: dict[K, asyncio.Future[V]]) -> None:
        try:
            found = await self._fetch(list(asked))
        except BaseException as error:
            for answer in asked.values():
                if not answer.done():
                    answer.set_exception(error)
                    # Read, so a caller that stopped waiting leaves no "never retrieved" warning.
                    answer.add_done_callback(lambda f: f.exception())
            if not isinstance(error, Exception):
                raise
            return
        for key, answer in asked.items():
            if not answer.done():
                answer.set_result(found.get(key, self._missing))


R = TypeVar("R")


class CallBatcher(Generic[T, R]):
    """Calls made together, or while earlier ones are being answered, leave as one batch call.

    With fewer than ``max_in_flight`` batch calls out, a call leaves on the next
    turn of the event loop, with the calls made in the same turn (a relay handing
    on a claimed batch at once makes them all in one). Otherwise it waits for a
    batch call to come back and leaves with every call that arrived meanwhile, up
    to ``max_items`` a batch.
    Under load the batch calls per second stay bounded by the round trip while
    each carries what arrived during it. ``send`` answers one result per item, in
    order (an exception for an item raises it to that caller); what ``send``
    raises is raised to every caller of that batch.

    A batch is sent in a context of its own, under a span linked to the span of
    each call it carries, so no one caller's trace claims the others' work.
    """

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        name: str,
        max_in_flight: int = 2,
        max_items: int = 500,
    ) -> None:
        if max_in_flight < 1 or max_items < 1:
            raise ValueError("max_in_flight and max_items must be at least 1")
        self._send = send
        self._name = name
        self._max_in_flight = max_in_flight
        self._max_items = max_items
        self._waiting: list[tuple[T, asyncio.Future[R], trace.SpanContext]] = []
        self._in_flight = 0
        self._dispatch_due = False
        self._running: set[asyncio.Task[None]] = set()

    async def call(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, answer, trace.get_current_span().get_span_context()))
        if not self._dispatch_due:
            # Sent on the next turn of the loop, with the calls made in this one.
            self._dispatch_due = True
            loop.call_soon(self._dispatch)
        # A caller that stops waiting (a deadline) leaves its item to be sent.
        return await asyncio.shield(answer)

    def _dispatch(self) -> None:
        self._dispatch_due = False
        while self._waiting and self._in_flight < self._max_in_flight:
            batch = self._waiting[: self._max_items]
            del self._waiting[: self._max_items]
            self._in_flight += 1
            task = asyncio.create_task(self._send_batch(batch), context=contextvars.Context())
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _send_batch(
        self, batch: list[tuple[T, asyncio.Future[R], trace.SpanContext]]
    ) -> None:
        links = [trace.Link(context) for _, _, context in batch if context.is_valid]
        try:
            with _tracer.start_as_current_span(self._name, links=links) as span:
                span.set_attribute("mamoru.batch.items", len(batch))
                results = await self._send([item for item, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self._name} answered {len(results)} of {len(batch)} items")
        except BaseException as error:
            for _, answer, _ in batch:
                if not answer.done():
                    answer.set_exception(error)
                    answer.add_done_callback(lambda f: f.exception())
            if not isinstance(error, Exception):
                raise
        else:
            for (_, answer, _), result in zip(batch, results, strict=True):
                if answer.done():
                    continue
                if isinstance(result, BaseException):
                    answer.set_exception(result)
                    answer.add_done_callback(lambda f: f.exception())
                else:
                    answer.set_result(result)
        finally:
            self._in_flight -= 1
            self._dispatch()


_tracer = trace.get_tracer(__name__)
