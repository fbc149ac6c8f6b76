"""The assessments' signals, counted in memory and shared between replicas in batches.

An assessment reads its windows and counts itself in this replica's memory
(domain/tallies.py), without a round trip; so does a failure reported through
RecordOutcome. A background job (``sync``, about every second) adds this
replica's deltas to the database in one statement per table (additive upserts,
so every replica's deltas add up), then reads back the totals of the keys
counted since the last sync: every replica's counts, this one's included. A
decision therefore sees all of this replica's counts, and the others' on its
hot keys up to about one sync interval ago.

Trade-offs, on purpose:
- Only hot keys are read back: a key this replica has not counted before (a
  new IP, a wallet it never saw) starts from this replica's own counts, and what
  other replicas counted on it is added at the first sync after this replica
  counts it a second time. Reading it from the database on the request path
  would put back the round trip per decision, and reading back every key once
  would double the database work of a flood from addresses each seen once.
- A replica that stops cleanly flushes first; one that dies loses at most one
  flush interval of its counts.
- Only what cannot be counted is read per decision, one primary-key lookup
  each: a known account's last sign-in (impossible travel; none for an
  unknown identifier), a session's last credential change (top-up) and a
  wallet's last top-up (payment). Those change on another replica's
  RecordOutcome, and a stale copy would let money move right after a
  takeover, so they are not cached.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from services.risk.domain.assess import LoginSignals
from services.risk.domain.outcomes import FAILURES, OutcomeEvent
from services.risk.domain.tallies import GLOBAL, Tallies
from services.risk.domain.windows import BUCKET_SECONDS, LoginWindows, bucket_of
from services.risk.use_cases.ports import Clock, History, PolicyInForce, SharedCounts

log = structlog.get_logger(__name__)

# Other replicas flush within about one interval of an event; a bucket is settled
# once it ended this long ago (several intervals, so a slow flush still lands).
SETTLE_INTERVALS = 5
MIN_SETTLE_SECONDS = 5.0


class Counting:
    """The Signals port: windows in memory, every replica's counts in the database."""

    def __init__(
        self,
        store: SharedCounts,
        history: History,
        in_force: PolicyInForce,
        *,
        clock: Clock,
        sync_seconds: float = 1.0,
        tallies: Tallies | None = None,
    ) -> None:
        self._store = store
        self._history = history
        self._in_force = in_force
        self._clock = clock
        self._settle = max(MIN_SETTLE_SECONDS, SETTLE_INTERVALS * sync_seconds)
        self.tallies = Tallies(horizon_buckets=self._horizon()) if tallies is None else tallies

    # ------------------------------------------------------------- assessments

    async def login(
        self,
        *,
        ip: str,
        subnet: str,
        device_id: str,
        known_device: bool,
        account_id: str,
        identifier: str,
        unknown: bool,
        windows: LoginWindows,
    ) -> LoginSignals:
        """Count this attempt and read its windows: the counts are as they stood before
        it, except the distinct-identifier counts, which include it (the attempt is what
        makes an IP or a device cross the limit)."""
        tallies, now = self.tallies, windows.bucket
        global_failures = tallies.total(*GLOBAL, windows.global_failures, now)[1]
        global_attempts, _, global_unknown = tallies.total(*GLOBAL, windows.unknown_share, now)
        ip_failures = tallies.total("ip", ip, windows.ip, now)[1]
        subnet_failures = tallies.total("subnet", subnet, windows.subnet, now)[1]
        account_failures = (
            tallies.total("account", account_id, windows.account, now)[1] if account_id else 0
        )
        if identifier:
            tallies.identify("ip", ip, now, identifier)
        ip_distinct = tallies.distinct("ip", ip, windows.distinct)
        device_distinct = 0
        # A device an account proved it owns is not one trying other people's accounts.
        if device_id and not known_device:
            if identifier:
                tallies.identify("device", device_id, now, identifier)
            device_distinct = tallies.distinct("device", device_id, windows.device_distinct)
        unknown_ = 1 if unknown else 0
        tallies.count(*GLOBAL, now, attempts=1, unknown=unknown_)
        tallies.count("ip", ip, now, attempts=1, unknown=unknown_)
        tallies.count("subnet", subnet, now, attempts=1, unknown=unknown_)
        if device_id:
            tallies.count("device", device_id, now, attempts=1, unknown=unknown_)
        if account_id:
            tallies.count("account", account_id, now, attempts=1)
            country, at = await self._history.previous_login(account_id)
        else:
            country, at = None, None
        return LoginSignals(
            ip_failures=ip_failures,
            subnet_failures=subnet_failures,
            account_failures=account_failures,
            global_failures=global_failures,
            global_attempts=global_attempts,
            global_unknown_attempts=global_unknown,
            ip_distinct_identifiers=ip_distinct,
            previous_login_country=country,
            previous_login_at=at,
            device_distinct_identifiers=device_distinct,
        )

    async def registration(self, *, ip: str, bucket: int, since_bucket: int) -> int:
        return self._count_and_read("registration_ip", ip, bucket, since_bucket)

    async def top_up(
        self, *, wallet_id: str, session_id: str, bucket: int, since_bucket: int
    ) -> tuple[int, datetime | None]:
        earlier = self._count_and_read("wallet_top_up", wallet_id, bucket, since_bucket)
        changed_at = await self._history.last_credential_change(session_id) if session_id else None
        return earlier, changed_at

    async def payment(
        self, *, wallet_id: str, bucket: int, since_bucket: int
    ) -> tuple[int, datetime | None, bool]:
        earlier = self._count_and_read("wallet_payment", wallet_id, bucket, since_bucket)
        top_up_at, from_new_device = await self._history.last_top_up(wallet_id)
        return earlier, top_up_at, from_new_device

    def _count_and_read(self, dimension: str, key: str, bucket: int, since: int) -> int:
        earlier = self.tallies.total(dimension, key, since, bucket)[0]
        self.tallies.count(dimension, key, bucket, attempts=1)
        return earlier

    # ---------------------------------------------------------------- outcomes

    def outcome(self, event: OutcomeEvent) -> None:
        """Count a failed sign-in for its IP, subnet, account and everyone; everyone's
        count takes all the failures the report stands for (a sampled flood's), the
        others only the one whose address and account it names."""
        if event.outcome not in FAILURES:
            return
        bucket = bucket_of(event.occurred_at)
        self.tallies.count(*GLOBAL, bucket, failures=event.represents)
        if event.ip:
            self.tallies.count("ip", event.ip, bucket, failures=1)
            self.tallies.count("subnet", event.subnet, bucket, failures=1)
        if event.account_id:
            self.tallies.count("account", event.account_id, bucket, failures=1)

    # ------------------------------------------------------------------- sync

    async def sync(self) -> None:
        """Flush this replica's deltas, then read every replica's totals of the keys
        counted since the last sync (and of the global key, always)."""
        tallies = self.tallies
        tallies.horizon_buckets = self._horizon()
        try:
            await self.flush()
            now = self._clock()
            wanted = tallies.wanted(bucket_of(now))
            cells, identifiers = await self._store.read(wanted)
            tallies.refreshed(
                wanted,
                cells,
                identifiers,
                settled=bucket_of(now - timedelta(seconds=self._settle)),
            )
        finally:
            tallies.prune(bucket_of(self._clock()))

    async def flush(self) -> None:
        """Add this replica's deltas to the database; kept for the next try if it fails."""
        batch = self.tallies.take()
        if not batch.cells and not batch.identifiers:
            return
        try:
            await self._store.add(batch)
        except BaseException:
            self.tallies.give_back(batch)
            raise

    def global_failures(self, seconds: float) -> int:
        """Failed sign-ins across all IPs in the last ``seconds``, every replica's."""
        now = bucket_of(self._clock())
        since = now - max(int(seconds) // BUCKET_SECONDS - 1, 0)
        return self.tallies.total(*GLOBAL, since, now)[1]

    def _horizon(self) -> int:
        """Buckets in the longest window of any rule in force."""
        longest = max(
            (
                rule.threshold("window_seconds")
                for rule in self._in_force.rules.rules.values()
                if "window_seconds" in rule.thresholds
            ),
            default=3600.0,
        )
        return int(longest) // BUCKET_SECONDS + 1
