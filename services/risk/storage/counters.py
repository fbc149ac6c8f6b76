"""Signal counters in PostgreSQL: every replica's deltas added up in batches, the
totals read back for the keys a replica is counting, and the few facts an
assessment cannot count (an account's last sign-in, a wallet's last top-up)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from services.risk.domain.tallies import Batch, Wanted
from services.risk.domain.windows import bucket_of
from services.runtime.batching import BatchedLookup

# Counters older than the longest window any rule may use are deleted.
COUNTER_RETENTION_SECONDS = 2 * 86400

_ADD_CELLS = """
insert into counters (dimension, key, bucket, shard, attempts, failures, unknown_attempts)
select d, k, b, 0, a, f, u
from unnest($1::text[], $2::text[], $3::bigint[], $4::int[], $5::int[], $6::int[])
     as x(d, k, b, a, f, u)
-- One order for every writer, so replicas flushing at once cannot deadlock.
order by d, k, b
on conflict (dimension, key, bucket, shard) do update
    set attempts = counters.attempts + excluded.attempts,
        failures = counters.failures + excluded.failures,
        unknown_attempts = counters.unknown_attempts + excluded.unknown_attempts
"""

_ADD_IP_IDENTIFIERS = """
insert into ip_identifiers (ip, bucket, identifier)
select * from unnest($1::text[], $2::bigint[], $3::text[]) order by 1, 2, 3
on conflict do nothing
"""

_ADD_DEVICE_IDENTIFIERS = """
insert into device_identifiers (device_id, bucket, identifier)
select * from unnest($1::text[], $2::bigint[], $3::text[]) order by 1, 2, 3
on conflict do nothing
"""

# Shards are summed: rows written before counting moved into memory may use several.
_READ = """
select c.dimension, c.key, c.bucket, sum(c.attempts)::int, sum(c.failures)::int,
    sum(c.unknown_attempts)::int, null::text
from unnest($1::text[], $2::text[], $3::bigint[]) as w(d, k, since)
join counters c on c.dimension = w.d and c.key = w.k and c.bucket >= w.since
group by 1, 2, 3
union all
select 'ip', i.ip, i.bucket, 0, 0, 0, i.identifier
from unnest($4::text[], $5::bigint[]) as w(k, since)
join ip_identifiers i on i.ip = w.k and i.bucket >= w.since
union all
select 'device', i.device_id, i.bucket, 0, 0, 0, i.identifier
from unnest($6::text[], $7::bigint[]) as w(k, since)
join device_identifiers i on i.device_id = w.k and i.bucket >= w.since
"""

Cells = list[tuple[str, str, int, int, int, int]]
Identifiers = list[tuple[str, str, int, str]]


async def add_counts(pool: asyncpg.Pool, batch: Batch) -> None:
    """Add one replica's deltas to every replica's totals, all or nothing, one
    statement per table."""
    cells = sorted(batch.cells, key=lambda c: (c.dimension, c.key, c.bucket))
    by_ip = [i for i in batch.identifiers if i.dimension == "ip"]
    by_device = [i for i in batch.identifiers if i.dimension == "device"]
    async with pool.acquire() as conn, conn.transaction():
        if cells:
            await conn.execute(
                _ADD_CELLS,
                [c.dimension for c in cells],
                [c.key for c in cells],
                [c.bucket for c in cells],
                [c.attempts for c in cells],
                [c.failures for c in cells],
                [c.unknown for c in cells],
            )
        for statement, seen in ((_ADD_IP_IDENTIFIERS, by_ip), (_ADD_DEVICE_IDENTIFIERS, by_device)):
            if seen:
                await conn.execute(
                    statement,
                    [i.key for i in seen],
                    [i.bucket for i in seen],
                    [i.identifier for i in seen],
                )


async def read_counts(pool: asyncpg.Pool, wanted: Sequence[Wanted]) -> tuple[Cells, Identifiers]:
    """Every replica's counts of the ``wanted`` keys from their ``since`` bucket on, and
    the identifiers tried from the IPs and devices among them, in one round trip."""
    ips = [w for w in wanted if w.identifiers and w.dimension == "ip"]
    devices = [w for w in wanted if w.identifiers and w.dimension == "device"]
    rows = await pool.fetch(
        _READ,
        [w.dimension for w in wanted],
        [w.key for w in wanted],
        [w.since for w in wanted],
        [w.key for w in ips],
        [w.since for w in ips],
        [w.key for w in devices],
        [w.since for w in devices],
    )
    cells: Cells = []
    identifiers: Identifiers = []
    for dimension, key, bucket, attempts, failures, unknown, identifier in rows:
        if identifier is None:
            cells.append((dimension, key, bucket, attempts, failures, unknown))
        else:
            identifiers.append((dimension, key, bucket, identifier))
    return cells, identifiers


PreviousLogin = tuple[str | None, datetime | None]


async def previous_logins(
    pool: asyncpg.Pool, account_ids: Sequence[str]
) -> dict[str, PreviousLogin]:
    """The country and time of each account's last successful sign-in, for the
    accounts that have one."""
    rows = await pool.fetch(
        "select account_id, last_login_country, last_login_at from account_state"
        " where account_id = any($1::text[])",
        list(account_ids),
    )
    return {row[0]: (row[1], row[2]) for row in rows}


async def last_credential_change(pool: asyncpg.Pool, session_id: str) -> datetime | None:
    """The last credential change of the account whose session asks."""
    value: datetime | None = await pool.fetchval(
        "select a.last_credential_change_at from sessions s"
        " join account_state a on a.account_id = s.account_id where s.session_id = $1",
        session_id,
    )
    return value


LastTopUp = tuple[datetime | None, bool]


async def last_top_ups(pool: asyncpg.Pool, wallet_ids: Sequence[str]) -> dict[str, LastTopUp]:
    """Each wallet's last top-up: when, and whether from a device new to the account;
    for the wallets that have one."""
    rows = await pool.fetch(
        "select wallet_id, last_top_up_at, last_top_up_from_new_device from wallet_state"
        " where wallet_id = any($1::text[])",
        list(wallet_ids),
    )
    return {row[0]: (row[1], bool(row[2])) for row in rows}


async def global_failures_since(pool: asyncpg.Pool, first_bucket: int) -> int:
    """Failed sign-ins across all IPs from ``first_bucket`` on, as every replica flushed them."""
    value = await pool.fetchval(
        "select coalesce(sum(failures), 0) from counters"
        " where dimension = 'global' and key = '' and bucket >= $1",
        first_bucket,
    )
    return int(value)


async def purge_old_counters(pool: asyncpg.Pool, now: datetime) -> None:
    oldest = bucket_of(now - timedelta(seconds=COUNTER_RETENTION_SECONDS))
    await pool.execute("delete from counters where bucket < $1", oldest)
    await pool.execute("delete from ip_identifiers where bucket < $1", oldest)
    await pool.execute("delete from device_identifiers where bucket < $1", oldest)


class CounterStore:
    """The counting's SharedCounts and History ports on PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        # The sign-ins of one AssessLogins call read their accounts' history at once,
        # and the payments of one AssessPayments call their wallets' last top-ups.
        self._previous_logins = BatchedLookup[str, PreviousLogin](
            lambda ids: previous_logins(pool, ids), missing=(None, None)
        )
        self._last_top_ups = BatchedLookup[str, LastTopUp](
            lambda ids: last_top_ups(pool, ids), missing=(None, False)
        )

    async def add(self, batch: Batch) -> None:
        await add_counts(self._pool, batch)

    async def read(self, wanted: Sequence[Wanted]) -> tuple[Cells, Identifiers]:
        return await read_counts(self._pool, wanted)

    async def previous_login(self, account_id: str) -> PreviousLogin:
        return await self._previous_logins.get(account_id)

    async def last_credential_change(self, session_id: str) -> datetime | None:
        return await last_credential_change(self._pool, session_id)

    async def last_top_up(self, wallet_id: str) -> LastTopUp:
        return await self._last_top_ups.get(wallet_id)
