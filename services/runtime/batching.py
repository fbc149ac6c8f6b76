"""Doing many small things as one: the runtime's batching.

- ``GroupCommit``: items submitted at about the same time are written in one call,
  and each submitter is answered once the write holding its item has finished. A
  caller that is answered knows its item is stored, yet the database sees one
  statement per batch instead of one per item. The first item of a batch waits at
  most ``max_wait`` seconds for company (less once ``max_items`` are queued). One
  write runs at a time: items arriving while it runs form the next batch, so
  batches grow with the load rather than the number of writes, up to
  ``max_items`` each.
- ``BatchedLookup``: reads by key asked together answered by one query.
- ``CallBatcher``: a client's calls to another service that overlap leave as one
  batch RPC, falling back to single calls (``OneByOne``) when the batch is refused.
- ``each_at_most``: a batch's items that each need their own transaction, a few
  at a time.

None of these is in a library the services use: gRPC has no client-side batching,
and the loaders that batch look-ups come with frameworks of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
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


async def each_at_most(
    limit: int, items: Sequence[T], handle: Callable[[T], Awaitable[Any]]
) -> list[Any]:
    """``handle`` each item, ``limit`` at a time, answers in order: the items of one
    batch call that each need their own transaction leave the pool to the rest."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with gate:
            return await handle(item)

    # Every item runs to its end before the first failure is raised, so none is
    # left running with an error nobody reads.
    outcomes = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return list(outcomes)


K = TypeVar("K")
V = TypeVar("V")


class BatchedLookup(Generic[K, V]):
    """Look-ups by key asked in the same turn of the event loop, answered by one query.

    ``fetch`` receives the distinct keys asked (at most ``max_keys`` at a time) and
    returns what it found; a key it did not return is answered ``missing``. A
    caller alone pays one loop turn more than a direct query; many callers at
    once (the items of a batch call, assessed together) pay one query between
    them.
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
                # In a context of its own: the query serves every caller, not the first.
                asyncio.get_running_loop().call_soon(self._dispatch, context=contextvars.Context())
            answer = self._asked[key] = asyncio.get_running_loop().create_future()
            if len(self._asked) >= self._max_keys:
                self._dispatch()
        return await asyncio.shield(answer)

    def _dispatch(self) -> None:
        asked, self._asked = self._asked, {}
        if not asked:
            return
        task = asyncio.create_task(self._answer(asked), context=contextvars.Context())
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


class BatcherFull(Exception):
    """More calls wait for a batch than the batcher holds: the callee is not keeping up."""


@dataclass(frozen=True)
class OneByOne(Generic[T, R]):
    """How a ``CallBatcher`` falls back to single calls.

    A batch call that fails with an error ``when`` accepts is sent again item by
    item through ``send``, so one item the callee refuses costs the others
    nothing. An error ``unsupported`` accepts (a callee too old for the batch
    call, during a rolling deploy) sends every call alone for ``for_seconds``.
    """

    send: Callable[[T], Awaitable[R]]
    when: Callable[[BaseException], bool]
    unsupported: Callable[[BaseException], bool]
    for_seconds: float = 60.0


# What a callee answers about one item (or about the batch call itself) rather than
# about being unable to answer now: worth asking again item by item.
_ITEM_BY_ITEM = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def grpc_one_by_one(send: Callable[[T], Awaitable[R]]) -> OneByOne[T, R]:
    """Fall back to the single RPC ``send`` when a batch RPC is refused as a whole."""

    def code_of(error: BaseException) -> grpc.StatusCode | None:
        return error.code() if isinstance(error, grpc.aio.AioRpcError) else None

    return OneByOne(
        send=send,
        when=lambda error: code_of(error) in _ITEM_BY_ITEM,
        unsupported=lambda error: code_of(error) == grpc.StatusCode.UNIMPLEMENTED,
    )


_Waiting = tuple[T, "asyncio.Future[R]", trace.SpanContext]
# Single calls a refused batch falls back to, at most this many at once.
ALONE_AT_ONCE = 8


class CallBatcher(Generic[T, R]):
    """Calls made together, or while earlier ones are being answered, leave as one batch call.

    With fewer than ``max_in_flight`` batch calls out, a call leaves on the next
    turn of the event loop, with the calls made in the same turn (a relay handing
    on a claimed batch at once makes them all in one). Otherwise it waits for a
    batch call to come back and leaves with every call that arrived meanwhile, up
    to ``max_items`` a batch. Under load the batch calls per second stay bounded
    by the round trip while each carries what arrived during it.

    ``send`` answers one result per item, in order (an exception for an item
    raises it to that caller); what ``send`` raises is raised to every caller of
    that batch, unless ``one_by_one`` says to ask item by item. A caller that
    stops waiting (its deadline) before its batch leaves takes its item back; past
    ``max_waiting`` waiting calls a new one fails at once with ``BatcherFull``.

    A batch is sent in a context of its own, under a span linked to the span of
    each call it carries, so no one caller's trace claims the others' work.
    """

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        name: str,
        one_by_one: OneByOne[T, R] | None = None,
        max_in_flight: int = 2,
        max_items: int = 500,
        max_waiting: int = 5_000,
    ) -> None:
        if max_in_flight < 1 or max_items < 1 or max_waiting < 1:
            raise ValueError("max_in_flight, max_items and max_waiting must be at least 1")
        self._send = send
        self._name = name
        self._one_by_one = one_by_one
        self._max_in_flight = max_in_flight
        self._max_items = max_items
        self._max_waiting = max_waiting
        self._waiting: list[_Waiting[T, R]] = []
        self._in_flight = 0
        self._dispatch_due = False
        self._alone_until = 0.0
        self._running: set[asyncio.Task[None]] = set()

    async def call(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if len(self._waiting) >= self._max_waiting:
            self._waiting = [waiting for waiting in self._waiting if not waiting[1].done()]
            if len(self._waiting) >= self._max_waiting:
                raise BatcherFull(f"{self._name}: {len(self._waiting)} calls already wait")
        answer: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, answer, trace.get_current_span().get_span_context()))
        if not self._dispatch_due:
            # Sent on the next turn of the loop, with the calls made in this one.
            self._dispatch_due = True
            loop.call_soon(self._dispatch, context=contextvars.Context())
        # Cancelling the wait cancels the answer: a batch not yet sent leaves it out.
        return await answer

    def _dispatch(self) -> None:
        self._dispatch_due = False
        while self._in_flight < self._max_in_flight:
            batch = self._take()
            if not batch:
                return
            self._in_flight += 1
            task = asyncio.create_task(self._send_batch(batch), context=contextvars.Context())
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self) -> list[_Waiting[T, R]]:
        """The next batch: up to ``max_items`` calls whose callers still wait."""
        batch: list[_Waiting[T, R]] = []
        while self._waiting and len(batch) < self._max_items:
            taken = self._waiting[: self._max_items - len(batch)]
            del self._waiting[: len(taken)]
            batch += [waiting for waiting in taken if not waiting[1].done()]
        return batch

    async def _send_batch(self, batch: list[_Waiting[T, R]]) -> None:
        links = [trace.Link(context) for _, _, context in batch if context.is_valid]
        try:
            with _tracer.start_as_current_span(self._name, links=links) as span:
                span.set_attribute("mamoru.batch.items", len(batch))
                results = await self._answers([item for item, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self._name} answered {len(results)} of {len(batch)} items")
        except BaseException as error:
            for _, answer, _ in batch:
                _settle(answer, error)
            if not isinstance(error, Exception):
                raise
        else:
            for (_, answer, _), result in zip(batch, results, strict=True):
                _settle(answer, result)
        finally:
            self._in_flight -= 1
            self._dispatch()

    async def _answers(self, items: list[T]) -> Sequence[R | BaseException]:
        fallback = self._one_by_one
        if fallback is not None and time.monotonic() < self._alone_until:
            return await self._each_alone(fallback, items)
        try:
            return await self._send(items)
        except Exception as error:
            if fallback is None or not fallback.when(error):
                raise
            if fallback.unsupported(error):
                self._alone_until = time.monotonic() + fallback.for_seconds
            # Even a batch of one: the refusal may be of the batch call, not the item.
            return await self._each_alone(fallback, items)

    @staticmethod
    async def _each_alone(fallback: OneByOne[T, R], items: list[T]) -> list[R | BaseException]:
        gate = asyncio.Semaphore(ALONE_AT_ONCE)

        async def alone(item: T) -> R:
            async with gate:
                return await fallback.send(item)

        answers: list[R | BaseException] = await asyncio.gather(
            *(alone(item) for item in items), return_exceptions=True
        )
        return answers


def _settle(answer: asyncio.Future[Any], outcome: Any) -> None:
    if answer.done():
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
        # Read, so a caller that stopped waiting leaves no "never retrieved" warning.
        answer.add_done_callback(lambda f: f.cancelled() or f.exception())
    else:
        answer.set_result(outcome)


_tracer = trace.get_tracer(__name__)
