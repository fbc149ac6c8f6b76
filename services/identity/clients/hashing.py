"""Password hashing (argon2id) behind the Hasher port, within a budget sized to the
cores, and the offline list of common and breached passwords."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from services.identity.domain.admission import AdmittedPlace, HashBudgetExhausted, HashSlots, Lane
from services.identity.domain.credentials import identifier_key
from services.runtime import metrics

# OWASP's minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
OWASP_MEMORY_KIB = 19 * 1024
OWASP_TIME_COST = 2
OWASP_PARALLELISM = 1

T = TypeVar("T")


class Place:
    """An attempt's place in a lane of the budget, from its admission to its hash."""

    def __init__(self, budget: HashBudget, lane: Lane) -> None:
        self._budget = budget
        self.lane = lane
        self._held = True

    def give_up(self) -> None:
        if self._held:
            self._held = False
            self._budget._release(self.lane)


class HashBudget:
    """At most ``slots.total`` hashes at once, in two lanes.

    A known device's hash waits only for slots already running (it has slots of its
    own and goes first for the shared ones), up to ``known_wait`` seconds. Strangers
    are admitted to their lane up to its slots and ``queue`` more, while the wait this
    implies at the current hashing time stays within ``new_wait`` (admitted early, an
    attempt keeps its place while risk is asked, so the lane is full before risk is
    asked about attempts it could not hash); beyond, they are refused at once, and
    one that still waits longer than ``new_wait`` for a slot is refused then. More
    threads than cores would only make every hash slower, the owner's among them.
    """

    def __init__(
        self,
        slots: HashSlots,
        *,
        queue: int,
        new_wait: float,
        known_wait: float,
        hash_seconds: float = 0.05,
    ) -> None:
        self.slots = slots
        self._strangers = slots.for_strangers + queue
        # How long a hash takes here lately (a moving average of what ``observe`` is told).
        self.hash_seconds = hash_seconds
        self._wait = {Lane.NEW_DEVICE: new_wait, Lane.KNOWN_DEVICE: known_wait}
        self._running = {Lane.KNOWN_DEVICE: 0, Lane.NEW_DEVICE: 0}
        # Admitted and not yet hashing: being assessed, or waiting for a slot.
        self._admitted = {Lane.KNOWN_DEVICE: 0, Lane.NEW_DEVICE: 0}
        self._waiting: dict[Lane, collections.deque[asyncio.Future[None]]] = {
            Lane.KNOWN_DEVICE: collections.deque(),
            Lane.NEW_DEVICE: collections.deque(),
        }

    def _may_start(self, lane: Lane) -> bool:
        return self.slots.may_start(
            lane,
            running_known=self._running[Lane.KNOWN_DEVICE],
            running_new=self._running[Lane.NEW_DEVICE],
            known_waiting=len(self._waiting[Lane.KNOWN_DEVICE]),
        )

    def has_room(self, lane: Lane) -> bool:
        """Whether an attempt of ``lane`` would be admitted now: the strangers' lane has
        a place, and a stranger taking it would not wait longer than ``new_wait``."""
        if lane is Lane.KNOWN_DEVICE:
            return True
        ahead = self._running[Lane.NEW_DEVICE] + self._admitted[Lane.NEW_DEVICE]
        return (
            ahead < self._strangers
            and self.slots.stranger_wait(ahead, self.hash_seconds) <= self._wait[Lane.NEW_DEVICE]
        )

    def observe(self, seconds: float) -> None:
        """One hash took ``seconds`` (a busy machine's refusals keep pace with its hashes)."""
        self.hash_seconds += (seconds - self.hash_seconds) / 8

    def admit(self, lane: Lane) -> Place | None:
        """A place in ``lane`` for a hash to come (``slot(lane, place)``), or None when
        the strangers' lane is full. A place that will not be used is given up."""
        if not self.has_room(lane):
            return None
        self._admitted[lane] += 1
        return Place(self, lane)

    def _release(self, lane: Lane) -> None:
        self._admitted[lane] -= 1

    @contextlib.asynccontextmanager
    async def slot(self, lane: Lane, place: AdmittedPlace | None = None) -> AsyncIterator[None]:
        place = place or self.admit(lane)
        if place is None:
            raise HashBudgetExhausted
        try:
            await self._enter(lane)
        finally:
            place.give_up()
        try:
            yield
        finally:
            self._running[lane] -= 1
            self._wake()

    async def _enter(self, lane: Lane) -> None:
        waiting = self._waiting[lane]
        if not waiting and self._may_start(lane):
            self._running[lane] += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append(turn)
        try:
            async with asyncio.timeout(self._wait[lane]):
                await turn
        except BaseException as error:
            if turn.done() and not turn.cancelled():
                # Given a slot just as the caller gave up: pass it on.
                self._running[lane] -= 1
                self._wake()
            if isinstance(error, TimeoutError):
                raise HashBudgetExhausted from None
            raise
        finally:
            if turn in waiting:
                waiting.remove(turn)

    def _wake(self) -> None:
        """Hand free slots to waiters, known devices first (the slot is counted as theirs
        before they run, so nobody arriving meanwhile takes it)."""
        for lane in (Lane.KNOWN_DEVICE, Lane.NEW_DEVICE):
            waiting = self._waiting[lane]
            while waiting and self._may_start_waiter(lane):
                turn = waiting.popleft()
                if turn.done():
                    continue
                self._running[lane] += 1
                turn.set_result(None)

    def _may_start_waiter(self, lane: Lane) -> bool:
        # The waiter asking is itself in the queue; only others of the known lane count.
        known_waiting = len(self._waiting[Lane.KNOWN_DEVICE]) - (lane is Lane.KNOWN_DEVICE)
        return self.slots.may_start(
            lane,
            running_known=self._running[Lane.KNOWN_DEVICE],
            running_new=self._running[Lane.NEW_DEVICE],
            known_waiting=max(known_waiting, 0),
        )


class PasswordHasher:
    """argon2id in a worker thread within the budget, counting every hash so tests can
    prove when none ran."""

    def __init__(
        self,
        budget: HashBudget,
        *,
        memory_kib: int = OWASP_MEMORY_KIB,
        time_cost: int = OWASP_TIME_COST,
        parallelism: int = OWASP_PARALLELISM,
    ) -> None:
        self._budget = budget
        self._argon = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self.computed = 0
        # Unknown identifiers are checked against this, so they cost what a real account costs.
        started = time.perf_counter()
        self._dummy = self._argon.hash("mamoru dummy password for unknown identifiers")
        budget.hash_seconds = time.perf_counter() - started

    def has_room(self, lane: Lane) -> bool:
        return self._budget.has_room(lane)

    def admit(self, lane: Lane) -> Place | None:
        return self._budget.admit(lane)

    def typical_seconds(self) -> float:
        """About how long a hash takes here lately (to answer a refusal no sooner)."""
        return self._budget.hash_seconds

    async def hash(self, password: str, *, lane: Lane = Lane.NEW_DEVICE) -> str:
        async with self._budget.slot(lane):
            self._count()
            with metrics.IDENTITY_HASHES_IN_FLIGHT.track_inprogress():
                return await asyncio.to_thread(
                    self._timed, functools.partial(self._argon.hash, password)
                )

    async def verify(
        self,
        stored: str | None,
        password: str,
        *,
        lane: Lane = Lane.NEW_DEVICE,
        place: AdmittedPlace | None = None,
    ) -> bool:
        """True when ``password`` matches; an absent hash still costs one verification.
        Raises ``HashBudgetExhausted`` when the lane has no slot within its bounds.
        ``place``: one the caller was admitted to, which this uses up."""
        async with self._budget.slot(lane, place):
            self._count()
            with metrics.IDENTITY_HASHES_IN_FLIGHT.track_inprogress():
                matches = await asyncio.to_thread(
                    self._timed, functools.partial(self._verify, stored or self._dummy, password)
                )
        return matches and stored is not None

    async def stand_in(
        self, *, lane: Lane = Lane.NEW_DEVICE, place: AdmittedPlace | None = None
    ) -> None:
        """Hold a slot of ``lane`` for about one hash's time without computing one: a
        refusal that must take as long, and wait as a hash waits, as a wrong password."""
        async with self._budget.slot(lane, place):
            await asyncio.sleep(self._budget.hash_seconds)

    def _count(self) -> None:
        self.computed += 1
        metrics.IDENTITY_PASSWORD_HASHES.inc()

    def _timed(self, work: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return work()
        finally:
            self._budget.observe(time.perf_counter() - started)

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._argon.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._argon.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False


@functools.cache
def common_passwords() -> frozenset[str]:
    """zxcvbn's list of the 30,000 most common leaked passwords, folded like identifiers."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(identifier_key(word) for word in FREQUENCY_LISTS["passwords"])
