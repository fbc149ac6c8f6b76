"""All of risk's SQL: plain asyncpg, bound parameters, short explicit transactions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from services.risk.domain.assess import LoginSignals
from services.risk.domain.decisions import Reason
from services.risk.domain.policy import Policy, PolicyChange, apply_change
from services.risk.domain.rules import Rule, Verdict
from services.runtime.outages import OutageLog
from services.runtime.outbox import enqueue

log = structlog.get_logger(__name__)

BUCKET_SECONDS = 10
GLOBAL_SHARDS = 8
# Counters older than the longest window any rule may use are deleted.
COUNTER_RETENTION_SECONDS = 2 * 86400
# A device first seen this recently is still "new" for the spend-after-top-up signal.
NEW_DEVICE_DAYS = 7


def bucket_of(moment: datetime) -> int:
    return int(moment.timestamp()) // BUCKET_SECONDS


def window_start(now: datetime, seconds: float) -> int:
    """The first bucket inside a window ending now (the current bucket counts)."""
    return bucket_of(now) - max(int(seconds) // BUCKET_SECONDS - 1, 0)


# ---------------------------------------------------------------- policy and rules


async def load_policy(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[Policy, int]:
    """The stored policy and the revision of the rule overrides, in one read."""
    row = await conn.fetchrow(
        "select version, document, updated_at,"
        " (select coalesce(max(revision), 0) from rules) as rules_revision"
        " from policy where id = 1"
    )
    return Policy.from_document(row["version"], row["document"], row["updated_at"]), int(
        row["rules_revision"]
    )


async def change_policy(
    pool: asyncpg.Pool, change: PolicyChange, *, actor: str, reason: str
) -> Policy:
    async with pool.acquire() as conn, conn.transaction():
        return await change_policy_in(conn, change, actor=actor, reason=reason)


async def change_policy_in(
    conn: asyncpg.Connection, change: PolicyChange, *, actor: str, reason: str
) -> Policy:
    """Apply ``change`` inside the caller's transaction (the row lock orders writers)."""
    row = await conn.fetchrow(
        "select version, document, updated_at from policy where id = 1 for update"
    )
    current = Policy.from_document(row["version"], row["document"], row["updated_at"])
    changed = apply_change(current, change)
    updated_at = await conn.fetchval(
        "update policy set version = $1, document = $2, updated_at = now()"
        " where id = 1 returning updated_at",
        changed.version,
        changed.to_document(),
    )
    await _audit(conn, actor, reason, {"policy": change.describe()}, changed.version)
    return Policy.from_document(changed.version, changed.to_document(), updated_at)


async def _audit(
    conn: asyncpg.Connection, actor: str, reason: str, change: dict[str, Any], version: int
) -> None:
    await conn.execute(
        "insert into policy_changes (change_id, actor, reason, change, policy_version)"
        " values ($1, $2, $3, $4, $5)",
        uuid.uuid4(),
        actor,
        reason,
        change,
        version,
    )


async def load_rule_overrides(pool: asyncpg.Pool) -> list[Rule]:
    rows = await pool.fetch("select rule_id, enabled, thresholds, verdict, auto_action from rules")
    return [
        Rule(
            rule_id=row["rule_id"],
            description="",
            enabled=row["enabled"],
            thresholds={k: float(v) for k, v in row["thresholds"].items()},
            verdict=Verdict[row["verdict"]],
            auto_action=row["auto_action"],
        )
        for row in rows
    ]


async def save_rule(
    pool: asyncpg.Pool, rule: Rule, *, actor: str, reason: str, change: dict[str, Any]
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            insert into rules (rule_id, enabled, thresholds, verdict, auto_action)
            values ($1, $2, $3, $4, $5)
            on conflict (rule_id) do update set enabled = excluded.enabled,
                thresholds = excluded.thresholds, verdict = excluded.verdict,
                auto_action = excluded.auto_action, revision = nextval('rule_revisions'),
                updated_at = now()
            """,
            rule.rule_id,
            rule.enabled,
            dict(rule.thresholds),
            rule.verdict.name,
            rule.auto_action,
        )
        await _audit(conn, actor, reason, {"rule": rule.rule_id, **change}, 0)


async def list_policy_changes(pool: asyncpg.Pool, *, limit: int, offset: int) -> list[Any]:
    return list(
        await pool.fetch(
            "select change_id, actor, reason, change, policy_version, changed_at"
            " from policy_changes order by changed_at desc, change_id limit $1 offset $2",
            limit,
            offset,
        )
    )


# ---------------------------------------------------------------- sign-in signals


@dataclass(frozen=True)
class LoginWindows:
    """First bucket of each rule's window."""

    ip: int
    subnet: int
    account: int
    distinct: int
    global_failures: int
    unknown_share: int
    bucket: int


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
        random.randrange(GLOBAL_SHARDS),  # noqa: S311 - spreads writes, not a secret
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


# ---------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class OutcomeEvent:
    outcome: str
    decision_id: str
    account_id: str
    wallet_id: str
    payer_id: str
    session_id: str
    ip: str
    subnet: str
    device_id: str
    country: str
    amount_minor: int
    currency: str
    movement_id: str
    identifier_hash: str
    occurred_at: datetime


FAILURES = frozenset({"password_wrong", "second_factor_failed"})


# Outcomes that update a signal besides being stored; any other outcome is a single
# INSERT, atomic on its own, so it needs no BEGIN and COMMIT round trips (every
# captured payment and every right password is one of those).
SIGNAL_OUTCOMES = FAILURES | {"login_succeeded", "credential_changed", "top_up_completed"}

_INSERT_OUTCOME = """
    insert into outcomes (outcome_id, outcome, decision_id, account_id, wallet_id,
        payer_id, session_id, ip, device_id, amount_minor, currency, movement_id,
        identifier_hash, occurred_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    on conflict do nothing
"""


def _outcome_row(event: OutcomeEvent) -> tuple[Any, ...]:
    return (
        uuid.uuid4(),
        event.outcome,
        event.decision_id,
        event.account_id,
        event.wallet_id,
        event.payer_id,
        event.session_id,
        event.ip,
        event.device_id,
        event.amount_minor,
        event.currency,
        event.movement_id,
        event.identifier_hash,
        event.occurred_at,
    )


async def record_outcome(pool: asyncpg.Pool, event: OutcomeEvent) -> None:
    """Store the event and update the signals it feeds, in one transaction."""
    if event.outcome not in SIGNAL_OUTCOMES:
        await pool.execute(_INSERT_OUTCOME, *_outcome_row(event))
        return
    bucket = bucket_of(event.occurred_at)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_INSERT_OUTCOME, *_outcome_row(event))
        if event.outcome in FAILURES:
            rows: list[tuple[str, str, int]] = [
                ("global", "", random.randrange(GLOBAL_SHARDS))  # noqa: S311
            ]
            if event.ip:
                rows += [("ip", event.ip, 0), ("subnet", event.subnet, 0)]
            if event.account_id:
                rows.append(("account", event.account_id, 0))
            await conn.executemany(
                """
                insert into counters (dimension, key, bucket, shard, failures)
                values ($1, $2, $3, $4, 1)
                on conflict (dimension, key, bucket, shard) do update
                    set failures = counters.failures + 1
                """,
                # One order for every writer, so concurrent transactions cannot deadlock.
                sorted((dim, key, bucket, shard) for dim, key, shard in rows),
            )
        elif event.outcome == "login_succeeded" and event.account_id:
            await conn.execute(
                """
                insert into account_state (account_id, last_login_at, last_login_ip,
                    last_login_country)
                values ($1, $2, $3, nullif($4, ''))
                on conflict (account_id) do update set last_login_at = excluded.last_login_at,
                    last_login_ip = excluded.last_login_ip,
                    last_login_country = excluded.last_login_country
                where account_state.last_login_at is null
                   or account_state.last_login_at <= excluded.last_login_at
                """,
                event.account_id,
                event.occurred_at,
                event.ip,
                event.country,
            )
            if event.device_id:
                await conn.execute(
                    "insert into account_devices (account_id, device_id, first_seen_at)"
                    " values ($1, $2, $3) on conflict do nothing",
                    event.account_id,
                    event.device_id,
                    event.occurred_at,
                )
            if event.session_id:
                await conn.execute(
                    "insert into sessions (session_id, account_id, ip, device_id, started_at)"
                    " values ($1, $2, $3, $4, $5) on conflict do nothing",
                    event.session_id,
                    event.account_id,
                    event.ip,
                    event.device_id,
                    event.occurred_at,
                )
        elif event.outcome == "credential_changed" and event.account_id:
            await conn.execute(
                """
                insert into account_state (account_id, last_credential_change_at)
                values ($1, $2)
                on conflict (account_id) do update
                    set last_credential_change_at = greatest(
                        account_state.last_credential_change_at, excluded.last_credential_change_at)
                """,
                event.account_id,
                event.occurred_at,
            )
        elif event.outcome == "top_up_completed" and event.wallet_id:
            await conn.execute(
                """
                insert into wallet_state (wallet_id, last_top_up_at, last_top_up_from_new_device)
                select $1, $2, exists (
                    select 1 from sessions s
                    join account_devices d on d.account_id = s.account_id
                     and d.device_id = coalesce(nullif($4, ''), s.device_id)
                    where s.session_id = $3
                      and d.first_seen_at > $2::timestamptz - make_interval(days => $5::int)
                      -- A device is new to an account that had one before it; a new
                      -- customer's first phone is theirs and must pay at once.
                      and exists (
                          select 1 from account_devices earlier
                          where earlier.account_id = d.account_id
                            and earlier.first_seen_at < d.first_seen_at))
                on conflict (wallet_id) do update
                    set last_top_up_at = excluded.last_top_up_at,
                        last_top_up_from_new_device = excluded.last_top_up_from_new_device
                where wallet_state.last_top_up_at <= excluded.last_top_up_at
                """,
                event.wallet_id,
                event.occurred_at,
                event.session_id,
                event.device_id,
                NEW_DEVICE_DAYS,
            )


async def purge_old_counters(pool: asyncpg.Pool, now: datetime) -> None:
    oldest = bucket_of(now - timedelta(seconds=COUNTER_RETENTION_SECONDS))
    await pool.execute("delete from counters where bucket < $1", oldest)
    await pool.execute("delete from ip_identifiers where bucket < $1", oldest)


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class StoredDecision:
    decision_id: uuid.UUID
    kind: str
    verdict: Verdict
    score: int
    reasons: Sequence[Reason]
    inputs: dict[str, Any]
    country_code: str
    account_id: str
    ip: str
    decided_at: datetime


class DecisionLog:
    """Stores decisions in batches off the request path.

    An assessment returns as soon as its verdict is known; a writer inserts the
    queued decisions every few milliseconds in one statement. Shutdown flushes
    what is queued. If the queue grows past ``max_queued`` (the database is
    stuck), callers wait for the writer instead of growing memory without bound.
    """

    def __init__(
        self, pool: asyncpg.Pool, *, interval_seconds: float, max_queued: int = 20_000
    ) -> None:
        self._pool = pool
        self._interval = interval_seconds
        self._max_queued = max_queued
        self._queue: list[StoredDecision] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    async def add(self, decision: StoredDecision) -> None:
        self._queue.append(decision)
        if len(self._queue) >= self._max_queued:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            while self._queue:
                batch, self._queue = self._queue[:1000], self._queue[1000:]
                try:
                    await _insert_decisions(self._pool, batch)
                except Exception:
                    self._queue[:0] = batch
                    raise

    async def run(self, stop: asyncio.Event) -> None:
        outage = OutageLog(log, "decisions.flush_failed")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)
            try:
                await self.flush()
            except Exception as error:
                outage.failed(error, queued=len(self._queue))
            else:
                outage.ok()
        with contextlib.suppress(Exception):
            await self.flush()


async def _insert_decisions(pool: asyncpg.Pool, batch: Sequence[StoredDecision]) -> None:
    await pool.execute(
        """
        insert into decisions (decision_id, kind, verdict, score, reasons, inputs,
            country_code, account_id, ip, decided_at)
        select d, k, v, s, r::jsonb, i::jsonb, c, a, ip, t
        from unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[],
                    $7::text[], $8::text[], $9::text[], $10::timestamptz[])
             as x(d, k, v, s, r, i, c, a, ip, t)
        on conflict do nothing
        """,
        [d.decision_id for d in batch],
        [d.kind for d in batch],
        [d.verdict.name for d in batch],
        [d.score for d in batch],
        [json.dumps([r.to_dict() for r in d.reasons]) for d in batch],
        [json.dumps(d.inputs) for d in batch],
        [d.country_code for d in batch],
        [d.account_id for d in batch],
        [d.ip for d in batch],
        [d.decided_at for d in batch],
    )


async def list_decisions(
    pool: asyncpg.Pool,
    *,
    account_id: str,
    ip: str,
    since: datetime | None,
    limit: int,
    offset: int,
) -> list[Any]:
    return list(
        await pool.fetch(
            """
            select decision_id, kind, verdict, score, reasons, inputs, country_code, decided_at
            from decisions
            where ($1 = '' or account_id = $1) and ($2 = '' or ip = $2)
              and ($3::timestamptz is null or decided_at >= $3)
            order by decided_at desc, decision_id limit $4 offset $5
            """,
            account_id,
            ip,
            since,
            limit,
            offset,
        )
    )


# ---------------------------------------------------------------- cases and victims


async def open_case(
    pool: asyncpg.Pool,
    *,
    idempotency_key: str,
    source: str,
    account_id: str,
    wallet_id: str,
    alert_id: str,
    movement_id: str,
    description: str,
) -> Any:
    """Open a case once per idempotency key; a retry returns the first case."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """
            insert into cases (case_id, idempotency_key, source, account_id, wallet_id,
                alert_id, movement_id, notes)
            values ($1, $2, $3, $4, $5, $6, $7, $8)
            on conflict (idempotency_key) do nothing
            returning *
            """,
            uuid.uuid4(),
            idempotency_key,
            source,
            account_id,
            wallet_id,
            alert_id,
            movement_id,
            [description] if description else [],
        )
        if row is None:
            row = await conn.fetchrow(
                "select * from cases where idempotency_key = $1", idempotency_key
            )
    return row


async def get_case(pool: asyncpg.Pool, case_id: uuid.UUID) -> Any:
    return await pool.fetchrow("select * from cases where case_id = $1", case_id)


async def list_cases(pool: asyncpg.Pool, *, status: str, limit: int, offset: int) -> list[Any]:
    return list(
        await pool.fetch(
            "select * from cases where ($1 = '' or status = $1)"
            " order by opened_at desc, case_id limit $2 offset $3",
            status,
            limit,
            offset,
        )
    )


async def update_case(
    pool: asyncpg.Pool,
    case_id: uuid.UUID,
    *,
    status: str | None,
    assignee: str | None,
    note: str | None,
    indicators: dict[str, Any] | None = None,
) -> Any:
    return await pool.fetchrow(
        """
        update cases set status = coalesce($2, status), assignee = coalesce($3, assignee),
            notes = case when $4::text is null then notes else notes || to_jsonb($4::text) end,
            indicators = coalesce($5, indicators), updated_at = now()
        where case_id = $1
        returning *
        """,
        case_id,
        status,
        assignee,
        note,
        indicators,
    )


@dataclass(frozen=True)
class AffectedRow:
    account_id: str
    session_id: str
    movement_id: str | None
    wallet_id: str | None
    kind: str | None
    amount_minor: int | None
    currency: str | None
    occurred_at: datetime | None


async def find_affected(
    pool: asyncpg.Pool,
    *,
    ips: Sequence[str],
    subnets: Sequence[str],
    devices: Sequence[str],
    start: datetime,
    end: datetime,
) -> list[AffectedRow]:
    """Sessions from the indicators in the window and the money movements made in them.

    Ordered on every column, so the same stored events always give the same answer.
    """
    rows = await pool.fetch(
        """
        with attacker_sessions as (
            select distinct account_id, session_id from outcomes
            where outcome = 'login_succeeded' and account_id <> ''
              and occurred_at >= $4 and occurred_at < $5
              and (ip = any($1::text[]) or (device_id <> '' and device_id = any($3::text[]))
                   or (ip <> '' and ip::inet <<= any($2::inet[])))
        )
        select s.account_id, s.session_id, m.movement_id, m.wallet_id, m.outcome,
               m.amount_minor, m.currency, m.occurred_at
        from attacker_sessions s
        left join outcomes m on s.session_id <> '' and m.session_id = s.session_id
             and m.outcome in ('top_up_completed', 'payment_captured')
             and m.occurred_at >= $4
        order by s.account_id, s.session_id, m.occurred_at, m.movement_id
        """,
        list(ips),
        list(subnets),
        list(devices),
        start,
        end,
    )
    return [
        AffectedRow(
            account_id=row["account_id"],
            session_id=row["session_id"],
            movement_id=row["movement_id"],
            wallet_id=row["wallet_id"],
            kind={"top_up_completed": "top_up", "payment_captured": "payment"}.get(
                row["outcome"] or ""
            ),
            amount_minor=row["amount_minor"],
            currency=row["currency"],
            occurred_at=row["occurred_at"],
        )
        for row in rows
    ]


# ---------------------------------------------------------------- alerts


async def global_failures_since(pool: asyncpg.Pool, first_bucket: int) -> int:
    """Failed sign-ins across all IPs from ``first_bucket`` on, as every replica counted them."""
    value = await pool.fetchval(
        "select coalesce(sum(failures), 0) from counters"
        " where dimension = 'global' and key = '' and bucket >= $1",
        first_bucket,
    )
    return int(value)


_ALERT_LOCK = int.from_bytes(b"riskalrt", "big") - 2**63


async def alert_aggregates(
    pool: asyncpg.Pool,
    *,
    now: datetime,
    windows: dict[str, float],
    home_countries: Sequence[str],
) -> dict[str, float]:
    def since(rule_id: str) -> datetime:
        return now - timedelta(seconds=windows[rule_id])

    row = await pool.fetchrow(
        """
        select
            (select coalesce(sum(failures), 0) from counters
              where dimension = 'global' and key = '' and bucket >= $1) as failed_sign_ins,
            (select count(*) from decisions
              where kind = 'login' and decided_at >= $2 and country_code <> ''
                and not country_code = any($3::text[])) as foreign_sign_in_attempts,
            (select coalesce(sum(amount_minor), 0) from outcomes
              where outcome = 'top_up_completed' and occurred_at >= $4) as top_up_amount_minor,
            (select count(*) from decisions
              where kind = 'payment' and decided_at >= $5
                and inputs -> 'basket' ?| array['tobacco', 'gift_card', 'prepaid_card'])
              as high_risk_payments
        """,
        window_start(now, windows["alert.stuffing_wave"]),
        since("alert.foreign_ip_surge"),
        list(home_countries),
        since("alert.top_up_spike"),
        since("alert.high_risk_spend_spike"),
    )
    return {key: float(value) for key, value in dict(row).items()}


async def raise_alert(
    pool: asyncpg.Pool,
    *,
    rule_id: str,
    evidence: dict[str, Any],
    quiet_since: datetime,
    auto_action: PolicyChange | None,
    outbox_topic: str,
    summary: str,
) -> tuple[uuid.UUID, Policy | None] | None:
    """Store the alert, its notice to operators and its automatic switch in one transaction.

    Nothing is raised while an alert of the same rule raised since ``quiet_since``
    is still open or acknowledged, and only one replica evaluates at a time.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("select pg_try_advisory_xact_lock($1)", _ALERT_LOCK):
            return None
        recent = await conn.fetchval(
            "select exists (select 1 from alerts where rule_id = $1 and raised_at >= $2"
            " and status in ('open', 'acknowledged'))",
            rule_id,
            quiet_since,
        )
        if recent:
            return None
        alert_id = uuid.uuid4()
        policy = None
        action = ""
        if auto_action is not None:
            policy = await change_policy_in(
                conn, auto_action, actor="risk:auto", reason=f"alert {rule_id} {alert_id}"
            )
            action = json.dumps(auto_action.describe(), sort_keys=True)
        await conn.execute(
            "insert into alerts (alert_id, rule_id, evidence, auto_action_taken)"
            " values ($1, $2, $3, $4)",
            alert_id,
            rule_id,
            evidence,
            action,
        )
        await enqueue(
            conn,
            topic=outbox_topic,
            idempotency_key=f"risk-alert:{alert_id}",
            payload={
                "alert_id": str(alert_id),
                "rule_id": rule_id,
                "summary": summary,
                "evidence": evidence,
                "auto_action_taken": action,
            },
        )
    return alert_id, policy


async def list_alerts(pool: asyncpg.Pool, *, status: str, limit: int, offset: int) -> list[Any]:
    return list(
        await pool.fetch(
            "select * from alerts where ($1 = '' or status = $1)"
            " order by raised_at desc, alert_id limit $2 offset $3",
            status,
            limit,
            offset,
        )
    )


async def update_alert(
    pool: asyncpg.Pool, alert_id: uuid.UUID, *, status: str, note: str | None
) -> Any:
    return await pool.fetchrow(
        """
        update alerts set status = $2, updated_at = now(),
            notes = case when $3::text is null then notes else notes || to_jsonb($3::text) end
        where alert_id = $1 returning *
        """,
        alert_id,
        status,
        note,
    )
