"""Decisions: stored in batches, listed newest first for operators."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.risk.domain.decisions import Reason, StoredDecision
from services.risk.domain.rules import Verdict


async def insert_decisions(pool: asyncpg.Pool, batch: Sequence[StoredDecision]) -> None:
    """One statement for the whole batch; a decision stored before is left alone."""
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
    after: tuple[datetime, uuid.UUID] | None,
) -> list[StoredDecision]:
    """Newest first; ``after`` is the (decided_at, decision_id) of the previous page's last."""
    rows = await pool.fetch(
        """
        select decision_id, kind, verdict, score, reasons, inputs, country_code, account_id,
            ip, decided_at
        from decisions
        where ($1 = '' or account_id = $1) and ($2 = '' or ip = $2)
          and ($3::timestamptz is null or decided_at >= $3)
          and ($5::timestamptz is null or decided_at < $5
               or (decided_at = $5 and decision_id > $6::uuid))
        order by decided_at desc, decision_id limit $4
        """,
        account_id,
        ip,
        since,
        limit,
        after[0] if after else None,
        after[1] if after else None,
    )
    return [
        StoredDecision(
            decision_id=row["decision_id"],
            kind=row["kind"],
            verdict=Verdict[row["verdict"]],
            score=row["score"],
            reasons=tuple(Reason(**reason) for reason in row["reasons"]),
            inputs=row["inputs"],
            country_code=row["country_code"],
            account_id=row["account_id"],
            ip=row["ip"],
            decided_at=row["decided_at"],
        )
        for row in rows
    ]
