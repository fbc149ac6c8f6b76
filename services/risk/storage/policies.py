"""The policy (one row, versioned), the rule overrides, and the audit trail of both."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.risk.domain.policy import (
    Policy,
    PolicyChange,
    PolicyChangeRecord,
    apply_change,
    audited,
)
from services.risk.domain.rules import Rule, Verdict


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


async def locked_policy(conn: asyncpg.Connection) -> Policy:
    """The stored policy, its row locked until the caller's transaction ends (the
    lock orders writers)."""
    row = await conn.fetchrow(
        "select version, document, updated_at from policy where id = 1 for update"
    )
    return Policy.from_document(row["version"], row["document"], row["updated_at"])


async def change_policy_in(
    conn: asyncpg.Connection, change: PolicyChange, *, actor: str, reason: str
) -> Policy:
    """Apply ``change`` inside the caller's transaction."""
    current = await locked_policy(conn)
    changed = apply_change(current, change)
    updated_at = await conn.fetchval(
        "update policy set version = $1, document = $2, updated_at = now()"
        " where id = 1 returning updated_at",
        changed.version,
        changed.to_document(),
    )
    await audit(conn, actor, reason, {"policy": audited(change, current)}, changed.version)
    if change.switch == "lift_containment" and current.containment_alert_id:
        await note_containment(
            conn,
            uuid.UUID(current.containment_alert_id),
            {"lifted_by": actor, "lifted_because": reason},
        )
    return Policy.from_document(changed.version, changed.to_document(), updated_at)


async def note_containment(
    conn: asyncpg.Connection, alert_id: uuid.UUID, fields: dict[str, Any]
) -> None:
    """Merge ``fields`` into what the alert says of its containment (its auto action)."""
    await conn.execute(
        """
        update alerts set auto_action_taken = jsonb_set(
            coalesce(nullif(auto_action_taken, '')::jsonb, '{}'::jsonb), '{containment}',
            coalesce(nullif(auto_action_taken, '')::jsonb -> 'containment', '{}'::jsonb)
                || $2::jsonb)::text
        where alert_id = $1
        """,
        alert_id,
        fields,
    )


async def audit(
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
        await audit(conn, actor, reason, {"rule": rule.rule_id, **change}, 0)


async def list_policy_changes(
    pool: asyncpg.Pool, *, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[PolicyChangeRecord]:
    """Newest first; ``after`` is the (changed_at, change_id) of the previous page's last."""
    rows = await pool.fetch(
        """
        select change_id, actor, reason, change, policy_version, changed_at
        from policy_changes
        where $2::timestamptz is null or changed_at < $2
              or (changed_at = $2 and change_id > $3::uuid)
        order by changed_at desc, change_id limit $1
        """,
        limit,
        after[0] if after else None,
        after[1] if after else None,
    )
    return [PolicyChangeRecord(**dict(row)) for row in rows]
