"""Counting windows kept in memory: what an assessment reads without a round trip.

Every key (a dimension and its value: an IP, a /24 or /48, a device, an account,
a wallet, or the one global key) holds, per 10-second bucket, attempts, failures
and attempts on unknown identifiers in two parts:

- shared: the totals of every replica as last read from the database (this
  replica's flushed counts included);
- pending: what this replica counted since its last flush.

A window's count is the sum of both over its buckets. IPs and devices also keep
the identifiers tried from them (the bucket each was last tried in), so distinct
identifiers are a set, never a sum, and reading another replica's identifiers
twice counts nothing twice.

Only hot keys are read back from the database: those counted more than once
while held here (so a flood of addresses each seen once costs one write each
and no read). A key this replica has not held yet, or has counted once, has its
own counts; the other replicas' counts on it arrive at the first refresh after
it is counted a second time. Buckets a settle time older than a key's last
refresh are final: later refreshes read only the buckets after them.

Memory stays bounded under a flood from many addresses: buckets and identifiers
older than the horizon (the longest window in force) are dropped when their key
is touched, keys untouched for longer than the horizon are dropped by ``prune``,
each key keeps at most ``max_identifiers_per_key`` identifiers (the count
saturates there, far above any sensible threshold), and past ``max_cells``
buckets and identifiers in all, the least recently used keys with nothing left
to flush are forgotten: their counts are in the database and are read again
when the key comes back. Only when the database has been away long enough for
unflushed counts alone to pass the cap are the oldest of those dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Key = tuple[str, str]

# Dimensions whose keys also keep the identifiers tried from them.
DISTINCT_DIMENSIONS = frozenset({"ip", "device"})
GLOBAL: Key = ("global", "")


@dataclass(frozen=True)
class CellDelta:
    """What this replica counted on one key in one bucket, to be added to the database."""

    dimension: str
    key: str
    bucket: int
    attempts: int
    failures: int
    unknown: int


@dataclass(frozen=True)
class IdentifierSeen:
    dimension: str
    key: str
    bucket: int
    identifier: str


@dataclass(frozen=True)
class Wanted:
    """A key whose shared buckets from ``since`` on are to be read again."""

    dimension: str
    key: str
    since: int
    identifiers: bool


@dataclass(frozen=True)
class Batch:
    """One flush: the deltas taken out of pending, handed back if the flush fails."""

    cells: tuple[CellDelta, ...]
    identifiers: tuple[IdentifierSeen, ...]


class _Tally:
    __slots__ = ("events", "final", "ids", "new_ids", "pending", "shared", "used")

    def __init__(self, distinct: bool, bucket: int) -> None:
        self.shared: dict[int, list[int]] = {}
        self.pending: dict[int, list[int]] = {}
        self.ids: dict[str, int] | None = {} if distinct else None
        self.new_ids: set[tuple[int, str]] = set()
        # Buckets before ``final`` are settled in ``shared``; None: never read.
        self.final: int | None = None
        self.used = bucket
        self.events = 0

    def busy(self) -> bool:
        return bool(self.pending or self.new_ids)

    def cells(self) -> int:
        return len(self.shared) + len(self.pending) + (len(self.ids) if self.ids else 0)


class Tallies:
    def __init__(
        self,
        *,
        horizon_buckets: int,
        max_cells: int = 2_000_000,
        max_identifiers_per_key: int = 1_000,
    ) -> None:
        self.horizon_buckets = horizon_buckets
        self.max_cells = max_cells
        self.max_identifiers_per_key = max_identifiers_per_key
        # Least recently used first.
        self._keys: dict[Key, _Tally] = {}
        self._cells = 0
        # Keys to read again at the next refresh, and keys with deltas to flush.
        self._dirty: set[Key] = {GLOBAL}
        self._unflushed: set[Key] = set()

    # ---------------------------------------------------------------- counting

    def count(
        self,
        dimension: str,
        key: str,
        bucket: int,
        *,
        attempts: int = 0,
        failures: int = 0,
        unknown: int = 0,
    ) -> None:
        tally = self._touch((dimension, key), bucket)
        tally.events += 1
        self._unflushed.add((dimension, key))
        cell = tally.pending.get(bucket)
        if cell is None:
            cell = tally.pending[bucket] = [0, 0, 0]
            self._cells += 1
        cell[0] += attempts
        cell[1] += failures
        cell[2] += unknown

    def identify(self, dimension: str, key: str, bucket: int, identifier: str) -> None:
        """Remember that ``identifier`` was tried from ``key`` (an IP or a device) now."""
        tally = self._touch((dimension, key), bucket)
        ids = tally.ids
        assert ids is not None, f"{dimension} keeps no identifiers"
        last = ids.pop(identifier, None)
        if last is None:
            self._cells += 1
            if len(ids) >= self.max_identifiers_per_key:
                del ids[next(iter(ids))]
                self._cells -= 1
        ids[identifier] = max(bucket, last or bucket)
        if last != bucket:
            tally.new_ids.add((bucket, identifier))
            self._unflushed.add((dimension, key))

    # ----------------------------------------------------------------- reading

    def total(self, dimension: str, key: str, since: int, until: int) -> tuple[int, int, int]:
        """(attempts, failures, unknown) in buckets ``since`` to ``until``, all replicas."""
        tally = self._keys.get((dimension, key))
        if tally is None:
            return 0, 0, 0
        attempts = failures = unknown = 0
        for cells in (tally.shared, tally.pending):
            if not cells:
                continue
            for bucket in range(since, until + 1):
                cell = cells.get(bucket)
                if cell is not None:
                    attempts += cell[0]
                    failures += cell[1]
                    unknown += cell[2]
        return attempts, failures, unknown

    def distinct(self, dimension: str, key: str, since: int) -> int:
        """Distinct identifiers tried from ``key`` from bucket ``since`` on (saturates at
        ``max_identifiers_per_key``)."""
        tally = self._keys.get((dimension, key))
        if tally is None or not tally.ids:
            return 0
        ids = tally.ids
        # Kept least recently tried first: when the first is inside the window, all are.
        if next(iter(ids.values())) >= since:
            return len(ids)
        return sum(1 for bucket in ids.values() if bucket >= since)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def cells(self) -> int:
        return self._cells

    # ------------------------------------------------------ flush and refresh

    def take(self) -> Batch:
        """Every pending delta, moved into shared: the flush that follows adds them to
        the database, and the refresh after it reads them back with the others'."""
        cells: list[CellDelta] = []
        identifiers: list[IdentifierSeen] = []
        unflushed, self._unflushed = self._unflushed, set()
        for dimension, key in unflushed:
            tally = self._keys.get((dimension, key))
            if tally is None:
                continue
            if tally.events > 1:
                self._dirty.add((dimension, key))
            if tally.pending:
                before = tally.cells()
                for bucket, (a, f, u) in tally.pending.items():
                    cells.append(CellDelta(dimension, key, bucket, a, f, u))
                    self._add(tally.shared, bucket, a, f, u)
                tally.pending = {}
                self._cells += tally.cells() - before
            if tally.new_ids:
                identifiers.extend(
                    IdentifierSeen(dimension, key, bucket, identifier)
                    for bucket, identifier in tally.new_ids
                )
                tally.new_ids = set()
        return Batch(tuple(cells), tuple(identifiers))

    def give_back(self, batch: Batch) -> None:
        """The flush of ``batch`` failed: its deltas are pending again."""
        for cell in batch.cells:
            tally = self._keys.get((cell.dimension, cell.key))
            if tally is None:
                continue
            before = tally.cells()
            shared = tally.shared.get(cell.bucket)
            if shared is not None:
                shared[0] -= cell.attempts
                shared[1] -= cell.failures
                shared[2] -= cell.unknown
                if not any(shared):
                    del tally.shared[cell.bucket]
            self._add(tally.pending, cell.bucket, cell.attempts, cell.failures, cell.unknown)
            self._cells += tally.cells() - before
            self._unflushed.add((cell.dimension, cell.key))
        for seen in batch.identifiers:
            tally = self._keys.get((seen.dimension, seen.key))
            if tally is not None:
                tally.new_ids.add((seen.bucket, seen.identifier))
                self._unflushed.add((seen.dimension, seen.key))

    def wanted(self, now_bucket: int) -> list[Wanted]:
        """The keys to read again: the hot ones (counted more than once) among those
        counted since the last flush, and the global key always. A key is read from its
        first unsettled bucket, or over the whole horizon if it was never read."""
        oldest = now_bucket - self.horizon_buckets
        wanted = []
        for dimension, key in self._dirty:
            tally = self._keys.get((dimension, key))
            final = tally.final if tally is not None else None
            ids = tally.ids if tally is not None else None
            saturated = ids is not None and len(ids) >= self.max_identifiers_per_key
            wanted.append(
                Wanted(
                    dimension,
                    key,
                    oldest if final is None else max(final, oldest),
                    identifiers=dimension in DISTINCT_DIMENSIONS and not saturated,
                )
            )
        return wanted

    def refreshed(
        self,
        wanted: Iterable[Wanted],
        cells: Iterable[tuple[str, str, int, int, int, int]],
        identifiers: Iterable[tuple[str, str, int, str]],
        *,
        settled: int,
    ) -> None:
        """Replace the shared buckets of ``wanted`` keys with what the database holds.

        ``settled``: the first bucket other replicas may still add to.
        """
        by_key: dict[Key, list[tuple[int, int, int, int]]] = {}
        for dimension, key, bucket, a, f, u in cells:
            by_key.setdefault((dimension, key), []).append((bucket, a, f, u))
        for want in wanted:
            key_ = (want.dimension, want.key)
            self._dirty.discard(key_)
            tally = self._keys.get(key_)
            if tally is None:
                if key_ != GLOBAL:
                    continue  # forgotten meanwhile: read again when it comes back
                tally = self._keys[key_] = _Tally(False, settled)
            before = len(tally.shared)
            tally.shared = {b: c for b, c in tally.shared.items() if b < want.since}
            for bucket, a, f, u in by_key.get(key_, ()):
                tally.shared[bucket] = [a, f, u]
            self._cells += len(tally.shared) - before
            tally.final = settled if tally.final is None else max(tally.final, settled)
        self._dirty.add(GLOBAL)
        merged: set[Key] = set()
        for dimension, key, bucket, identifier in identifiers:
            tally = self._keys.get((dimension, key))
            if tally is None or tally.ids is None:
                continue
            ids = tally.ids
            last = ids.get(identifier)
            if last is None:
                if len(ids) >= self.max_identifiers_per_key:
                    continue
                ids[identifier] = bucket
                self._cells += 1
            elif bucket > last:
                ids[identifier] = bucket
            else:
                continue
            merged.add((dimension, key))
        for key_ in merged:
            # Back in least-recently-tried order, which expiry and ``distinct`` rely on.
            tally = self._keys[key_]
            assert tally.ids is not None
            tally.ids = dict(sorted(tally.ids.items(), key=lambda item: item[1]))

    # ------------------------------------------------------------------ memory

    def prune(self, now_bucket: int) -> None:
        """Forget keys idle past the horizon, then the least recently used ones while
        over ``max_cells``. A key with deltas still to flush is kept, unless the
        database has been away so long that only those are left to forget: then the
        least recently used lose their unflushed counts rather than memory running out."""
        oldest = now_bucket - self.horizon_buckets
        over = self._cells - self.max_cells
        forget = []
        for key_, tally in self._keys.items():
            if tally.used >= oldest and over <= 0:
                break
            if tally.busy() or key_ == GLOBAL:
                continue
            forget.append(key_)
            over -= tally.cells()
        if over > 0:
            for key_, tally in self._keys.items():
                if over <= 0:
                    break
                if tally.busy() and key_ != GLOBAL:
                    forget.append(key_)
                    over -= tally.cells()
        for key_ in forget:
            self._cells -= self._keys.pop(key_).cells()
            self._dirty.discard(key_)
            self._unflushed.discard(key_)

    def _touch(self, key_: Key, bucket: int) -> _Tally:
        tally = self._keys.pop(key_, None)
        if tally is None:
            tally = _Tally(key_[0] in DISTINCT_DIMENSIONS, bucket)
        elif bucket > tally.used:
            tally.used = bucket
            self._expire(tally, bucket - self.horizon_buckets)
        self._keys[key_] = tally
        return tally

    def _expire(self, tally: _Tally, oldest: int) -> None:
        for cells in (tally.shared, tally.pending):
            old = [b for b in cells if b < oldest]
            for bucket in old:
                del cells[bucket]
            self._cells -= len(old)
        if tally.ids:
            while tally.ids:
                identifier, bucket = next(iter(tally.ids.items()))
                if bucket >= oldest:
                    break
                del tally.ids[identifier]
                self._cells -= 1

    @staticmethod
    def _add(cells: dict[int, list[int]], bucket: int, a: int, f: int, u: int) -> None:
        cell = cells.get(bucket)
        if cell is None:
            cells[bucket] = [a, f, u]
        else:
            cell[0] += a
            cell[1] += f
            cell[2] += u
