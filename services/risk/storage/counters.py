"""Signal counters: every assessment counts itself and reads its windows in one
statement (one round trip), so the answer never waits on a second query."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import asyncpg

from services.risk.domain.assess import LoginSignals
from services.risk.domain.windows import LoginWindows, bucket_of

GLOBAL_SHARDS = 8
# Counters older than the longest window any rule may use are deleted.
COUNTER_RETENTION_SECONDS = 2 * 86400

_LOGIN_SIGNALS = """
with attempt as (
    insert into counters (dimension, key, bucket, shard, attempts, unknown_attempts)
    -- Rows in dimension order, as every writer takes them, so writers cannot deadlock.
    values ('global', '', $7, $8, 1, $9), ('ip', $1, $7, 0, 1, $9),
           ('subnet', $2, $7, 0, 1, $9)
    on conflict (dimension, key, bucket, shard) do update
        set attempts = counters.attempts + 1,
            unknown_attempts = counters.unknown_attempts + excluded.unknown_attempts
), tried as (
    insert into ip_identifiers (ip, bucket, identifier) values ($1, $7, $4)
    on conflict do nothing
)
select
    (select coalesce(sum(failures), 0) from counters
      where dimension = 'ip' and key = $1 and bucket >= $10) as ip_failures,
    (select coalesce(sum(failures), 0) from counters
      where dimension = 'subnet' and key = $2 and bucket >= $11) as subnet_failures,
    (select coalesce(sum(failures), 0) from counters
      where dimension = 'account' and key = $3 and bucket >= $12) as account_failures,
    (select coalesce(sum(failures), 0) from counters
      where dimension = 'global' and key = '' and bucket >= $13) as global_failures,
    (select coalesce(sum(attempts), 0) from counters
      where dimension = 'global' and key = '' and bucket >= $14) as global_attempts,
    (select coalesce(sum(unknown_attempts), 0) from counters
      where dimension = 'global' and key = '' and bucket >= $14) as global_unknown,
    (select count(distinct identifier) from ip_identifiers
      where ip = $1 and bucket >= $5 and identifier <> $4) as other_identifiers,
    a.last_login_country, a.last_login_at
from (select 1) as one
left join account_state a on a.account_id = $3 and $6
"""


def global_shard() -> int:
    """A shard of the global counters, so concurrent writers spread over rows."""
    return random.randrange(GLOBAL_SHARDS)  # noqa: S311 - spreads writes, not a secret


async def login_signals(
    pool: asyncpg.Pool,
    *,
    ip: str,
    subnet: str,
    account_id: str,
    identifier: str,
    unknown: bool,
    windows: LoginWindows,
) -> LoginSignals:
    """Count this attempt and read every window in one statement (one round trip).

    The counts are as they stood before this attempt, except the distinct-identifier
    count, which includes it: the attempt is what makes an IP cross the limit.
    """
    row = await pool.fetchrow(
        _LOGIN_SIGNALS,
        ip,
        subnet,
        account_id,
        identifier,
        windows.distinct,
        bool(account_id),
        windows.bucket,
        global_shard(),
        1 if unknown else 0,
        windows.ip,
        windows.subnet,
        windows.account,
        windows.global_failures,
        windows.unknown_share,
    )
    return LoginSignals(
        ip_failures=int(row["ip_failures"]),
        subnet_failures=int(row["subnet_failures"]),
        account_failures=int(row["account_failures"]),
        global_failures=int(row["global_failures"]),
        global_attempts=int(row["global_attempts"]),
        global_unknown_attempts=int(row["global_unknown"]),
        ip_distinct_identifiers=int(row["other_identifiers"]) + (1 if identifier else 0),
        previous_login_country=row["last_login_country"],
        previous_login_at=row["last_login_at"],
    )


async def count_and_read(
    pool: asyncpg.Pool, *, dimension: str, key: str, bucket: int, since_bucket: int
) -> int:
    """Count one event of ``dimension``/``key`` and return how many came before it in the window."""
    value = await pool.fetchval(
        """
        with counted as (
            insert into counters (dimension, key, bucket, attempts) values ($1, $2, $3, 1)
            on conflict (dimension, key, bucket, shard) do update
                set attempts = counters.attempts + 1
        )
        select coalesce(sum(attempts), 0) from counters
        where dimension = $1 and key = $2 and bucket >= $4
        """,
        dimension,
        key,
        bucket,
        since_bucket,
    )
    return int(value)


async def top_up_signals(
    pool: asyncpg.Pool, *, wallet_id: str, session_id: str, bucket: int, since_bucket: int
) -> tuple[int, datetime | None]:
    """Top-ups of the wallet before this one in the window, and the last credential
    change of the account whose session asks."""
    row = await pool.fetchrow(
        """
        with counted as (
            insert into counters (dimension, key, bucket, attempts)
            values ('wallet_top_up', $1, $3, 1)
            on conflict (dimension, key, bucket, shard) do update
                set attempts = counters.attempts + 1
        )
        select
            (select coalesce(sum(attempts), 0) from counters
              where dimension = 'wallet_top_up' and key = $1 and bucket >= $4) as recent,
            (select a.last_credential_change_at from sessions s
              join account_state a on a.account_id = s.account_id
              where s.session_id = $2) as changed_at
        """,
        wallet_id,
        session_id,
        bucket,
        since_bucket,
    )
    return int(row["recent"]), row["changed_at"]


async def payment_signals(
    pool: asyncpg.Pool, *, wallet_id: str, bucket: int, since_bucket: int
) -> tuple[int, datetime | None, bool]:
    """Payments of the wallet before this one in the window, and its last top-up:
    when, and whether from a device new to the account."""
    row = await pool.fetchrow(
        """
        with counted as (
            insert into counters (dimension, key, bucket, attempts)
            values ('wallet_payment', $1, $2, 1)
            on conflict (dimension, key, bucket, shard) do update
                set attempts = counters.attempts + 1
        )
        select
            (select coalesce(sum(attempts), 0) from counters
              where dimension = 'wallet_payment' and key = $1 and bucket >= $3) as recent,
            w.last_top_up_at, coalesce(w.last_top_up_from_new_device, false) as from_new_device
        from (select 1) as one
        left join wallet_state w on w.wallet_id = $1
        """,
        wallet_id,
        bucket,
        since_bucket,
    )
    return int(row["recent"]), row["last_top_up_at"], bool(row["from_new_device"])


async def global_failures_since(pool: asyncpg.Pool, first_bucket: int) -> int:
    """Failed sign-ins across all IPs from ``first_bucket`` on, as every replica counted them."""
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


class Counters:
    """The assessments' Signals port on PostgreSQL: one statement per assessment."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def login(
        self,
        *,
        ip: str,
        subnet: str,
        account_id: str,
        identifier: str,
        unknown: bool,
        windows: LoginWindows,
    ) -> LoginSignals:
        return await login_signals(
            self._pool,
            ip=ip,
            subnet=subnet,
            account_id=account_id,
            identifier=identifier,
            unknown=unknown,
            windows=windows,
        )

    async def registration(self, *, ip: str, bucket: int, since_bucket: int) -> int:
        return await count_and_read(
            self._pool,
            dimension="registration_ip",
            key=ip,
            bucket=bucket,
            since_bucket=since_bucket,
        )

    async def top_up(
        self, *, wallet_id: str, session_id: str, bucket: int, since_bucket: int
    ) -> tuple[int, datetime | None]:
        return await top_up_signals(
            self._pool,
            wallet_id=wallet_id,
            session_id=session_id,
            bucket=bucket,
            since_bucket=since_bucket,
        )

    async def payment(
        self, *, wallet_id: str, bucket: int, since_bucket: int
    ) -> tuple[int, datetime | None, bool]:
        return await payment_signals(
            self._pool, wallet_id=wallet_id, bucket=bucket, since_bucket=since_bucket
        )
