"""Group commit: items added together are written in one call, each caller is
answered once its batch is written, and a failed write fails its own callers only."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.runtime.batching import (
    BatchedLookup,
    BatcherFull,
    CallBatcher,
    GroupCommit,
    OneByOne,
)


class Store:
    def __init__(self) -> None:
        self.writes: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_next = False
        self.writing = 0
        self.most_at_once = 0
        self.started = asyncio.Event()

    async def write(self, items: Sequence[int]) -> None:
        self.writing += 1
        self.started.set()
        self.most_at_once = max(self.most_at_once, self.writing)
        try:
            await self.release.wait()
            if self.fail_next:
                self.fail_next = False
                raise ConnectionError("database away")
            self.writes.append(list(items))
        finally:
            self.writing -= 1


async def test_items_added_together_are_written_in_one_call_before_anyone_is_answered():
    store = Store()
    commit = GroupCommit(store.write, max_wait=0.05)

    async def add(item: int) -> list[list[int]]:
        await commit.add(item)
        return [list(w) for w in store.writes]

    seen = await asyncio.gather(*(add(n) for n in range(5)))
    assert store.writes == [[0, 1, 2, 3, 4]]
    assert all(any(n in write for write in writes) for n, writes in enumerate(seen))


async def test_a_full_batch_is_written_without_waiting_out_the_window():
    store = Store()
    commit = GroupCommit(store.write, max_wait=3600, max_items=3)
    await asyncio.wait_for(asyncio.gather(*(commit.add(n) for n in range(3))), timeout=30)
    assert store.writes == [[0, 1, 2]]


async def test_items_arriving_during_a_write_form_the_next_batch_and_one_write_runs_at_a_time():
    store = Store()
    store.release.clear()
    commit = GroupCommit(store.write, max_wait=0.001)
    first = asyncio.ensure_future(commit.add(1))
    await store.started.wait()
    later = [asyncio.ensure_future(commit.add(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert not first.done(), "answered only once written"
    store.release.set()
    await asyncio.gather(first, *later)
    assert store.writes == [[1], [2, 3, 4]]
    assert store.most_at_once == 1


async def test_a_failed_write_fails_its_callers_and_the_next_batch_is_written():
    store = Store()
    store.fail_next = True
    commit = GroupCommit(store.write, max_wait=0.001)
    results = await asyncio.gather(commit.add(1), commit.add(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    await commit.add(3)
    assert store.writes == [[3]]


async def test_a_caller_that_stops_waiting_still_has_its_item_written():
    store = Store()
    store.release.clear()
    commit = GroupCommit(store.write, max_wait=0.001)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(commit.add(7), timeout=0.01)
    store.release.set()
    await commit.drain()
    assert store.writes == [[7]]


async def test_items_queued_behind_a_slow_write_form_batches_no_larger_than_max_items():
    store = Store()
    store.release.clear()
    commit = GroupCommit(store.write, max_wait=0.001, max_items=3)
    first = asyncio.ensure_future(commit.add(0))
    await store.started.wait()
    queued = [asyncio.ensure_future(commit.add(n)) for n in range(1, 8)]
    store.release.set()
    await asyncio.wait_for(asyncio.gather(first, *queued), timeout=30)
    assert store.writes == [[0], [1, 2, 3], [4, 5, 6], [7]]
    assert store.most_at_once == 1


async def test_look_ups_asked_together_are_answered_by_one_query_each_with_its_own_answer():
    queries: list[list[str]] = []

    async def fetch(keys: Sequence[str]) -> dict[str, int]:
        queries.append(list(keys))
        return {key: len(key) for key in keys if key != "absent"}

    lookup = BatchedLookup(fetch, missing=-1)
    answers = await asyncio.gather(*(lookup.get(k) for k in ("a", "bb", "a", "absent")))
    assert answers == [1, 2, 1, -1]
    assert queries == [["a", "bb", "absent"]]
    assert await lookup.get("ccc") == 3
    assert queries[-1] == ["ccc"]


async def test_a_failed_look_up_fails_the_callers_that_shared_it_and_the_next_one_asks_again():
    failing = True

    async def fetch(keys: Sequence[str]) -> dict[str, int]:
        if failing:
            raise ConnectionError("database away")
        return dict.fromkeys(keys, 1)

    lookup = BatchedLookup(fetch, missing=0)
    results = await asyncio.gather(lookup.get("a"), lookup.get("b"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    failing = False
    assert await lookup.get("a") == 1


class Remote:
    """A batch RPC that is answered when released, recording each batch it got."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_with: BaseException | None = None

    async def send(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [ValueError(f"odd {n}") if n == 13 else n * 10 for n in items]


async def test_a_call_with_nothing_in_flight_leaves_at_once_as_a_batch_of_one():
    remote = Remote()
    batcher = CallBatcher(remote.send, name="test.Batch", max_in_flight=1)
    assert await asyncio.wait_for(batcher.call(4), timeout=30) == 40
    assert remote.batches == [[4]]


async def test_calls_arriving_while_a_batch_is_answered_leave_together_and_get_their_own_answers():
    remote = Remote()
    remote.release.clear()
    batcher = CallBatcher(remote.send, name="test.Batch", max_in_flight=1, max_items=3)
    first = asyncio.ensure_future(batcher.call(1))
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(batcher.call(n)) for n in (2, 3, 4, 5)]
    await asyncio.sleep(0.01)
    assert remote.batches == [[1]], "the others wait for the batch in flight"
    remote.release.set()
    assert await asyncio.wait_for(asyncio.gather(first, *later), timeout=30) == [10, 20, 30, 40, 50]
    assert remote.batches == [[1], [2, 3, 4], [5]]


async def test_a_refused_item_fails_its_caller_only_and_a_failed_batch_fails_every_caller():
    remote = Remote()
    batcher = CallBatcher(remote.send, name="test.Batch", max_in_flight=1)
    results = await asyncio.gather(batcher.call(12), batcher.call(13), return_exceptions=True)
    assert results[0] == 120 and isinstance(results[1], ValueError)
    remote.fail_with = ConnectionError("risk away")
    failed = await asyncio.gather(batcher.call(1), batcher.call(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in failed)
    remote.fail_with = None
    assert await batcher.call(3) == 30


async def test_calls_made_in_the_same_turn_of_the_loop_leave_as_one_batch():
    remote = Remote()
    batcher = CallBatcher(remote.send, name="test.Batch", max_in_flight=2)
    assert await asyncio.gather(*(batcher.call(n) for n in range(5))) == [0, 10, 20, 30, 40]
    assert remote.batches == [[0, 1, 2, 3, 4]]


class Refusing(Remote):
    """A batch RPC refused whole when it holds a bad item (or always, when too old
    for batches); each item alone is answered, the bad one refused."""

    def __init__(self, *, batches_unknown: bool = False) -> None:
        super().__init__()
        self.batches_unknown = batches_unknown
        self.alone: list[int] = []

    async def send(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        if self.batches_unknown:
            raise Refused("unimplemented")
        if 13 in items:
            raise Refused("invalid")
        return [n * 10 for n in items]

    async def one(self, item: int) -> int:
        self.alone.append(item)
        if item == 13:
            raise Refused("invalid")
        return item * 10


class Refused(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def fallback(remote: Refusing) -> OneByOne[int, int]:
    return OneByOne(
        send=remote.one,
        when=lambda error: isinstance(error, Refused),
        unsupported=lambda error: isinstance(error, Refused) and error.why == "unimplemented",
    )


async def test_a_batch_refused_whole_is_asked_again_item_by_item_so_only_the_bad_item_fails():
    remote = Refusing()
    batcher = CallBatcher(remote.send, name="test.Batch", one_by_one=fallback(remote))
    results = await asyncio.gather(*(batcher.call(n) for n in (12, 13, 14)), return_exceptions=True)
    assert results[0] == 120 and results[2] == 140
    assert isinstance(results[1], Refused)
    assert remote.alone == [12, 13, 14]


async def test_a_callee_without_the_batch_call_is_called_one_by_one_without_asking_again():
    remote = Refusing(batches_unknown=True)
    batcher = CallBatcher(remote.send, name="test.Batch", one_by_one=fallback(remote))
    assert list(await asyncio.gather(batcher.call(1), batcher.call(2))) == [10, 20]
    assert list(await asyncio.gather(batcher.call(3), batcher.call(4))) == [30, 40]
    assert remote.batches == [[1, 2]], "the batch call is not tried again for a while"
    assert remote.alone == [1, 2, 3, 4]


async def test_a_caller_that_stops_waiting_before_its_batch_leaves_takes_its_item_back():
    remote = Remote()
    remote.release.clear()
    batcher = CallBatcher(remote.send, name="test.Batch", max_in_flight=1)
    first = asyncio.ensure_future(batcher.call(1))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.call(2), timeout=0.01)
    third = asyncio.ensure_future(batcher.call(3))
    remote.release.set()
    assert list(await asyncio.wait_for(asyncio.gather(first, third), timeout=30)) == [10, 30]
    assert remote.batches == [[1], [3]]


async def test_calls_beyond_what_the_batcher_holds_fail_at_once():
    remote = Remote()
    remote.release.clear()
    batcher = CallBatcher(remote.send, name="test.Batch", max_in_flight=1, max_waiting=2)
    first = asyncio.ensure_future(batcher.call(1))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(batcher.call(n)) for n in (2, 3)]
    await asyncio.sleep(0)
    with pytest.raises(BatcherFull):
        await batcher.call(4)
    remote.release.set()
    assert await asyncio.wait_for(asyncio.gather(first, *waiting), timeout=30) == [10, 20, 30]
