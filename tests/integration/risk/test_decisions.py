"""Decisions on PostgreSQL: stored in batches once, listed newest first by page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.risk.domain.decisions import Reason, StoredDecision
from services.risk.domain.rules import Verdict
from services.risk.storage import decisions

ACCOUNT = "0190f5a4-0000-7000-8000-0000000000aa"
START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def decision(minute: int, *, account_id: str = ACCOUNT, ip: str = "133.1.2.3") -> StoredDecision:
    return StoredDecision(
        decision_id=uuid.uuid4(), kind="login", verdict=Verdict.CHALLENGE, score=300,
        reasons=(Reason("login.new_device", 1.0, 1.0, "new device"),),
        inputs={"method": "password", "signals": {"ip_failures": 0}}, country_code="JP",
        account_id=account_id, ip=ip, decided_at=START + timedelta(minutes=minute),
    )  # fmt: skip


async def test_a_stored_decision_reads_back_as_it_was_decided(pool):
    stored = decision(0)
    await decisions.insert_decisions(pool, [stored])
    assert await decisions.list_decisions(
        pool, account_id="", ip="", since=None, limit=10, after=None
    ) == [stored]


async def test_a_batch_stored_twice_keeps_one_row_per_decision(pool):
    batch = [decision(0), decision(1)]
    await decisions.insert_decisions(pool, batch)
    await decisions.insert_decisions(pool, batch)
    assert await pool.fetchval("select count(*) from decisions") == 2


async def test_pages_run_newest_first_and_start_after_the_previous_page(pool):
    stored = [decision(minute) for minute in range(5)]
    # Two in the same instant: the ID orders them.
    stored.append(decision(4))
    await decisions.insert_decisions(pool, stored)
    seen: list[StoredDecision] = []
    after = None
    while True:
        page = await decisions.list_decisions(
            pool, account_id="", ip="", since=None, limit=2, after=after
        )
        seen += page
        if len(page) < 2:
            break
        after = (page[-1].decided_at, page[-1].decision_id)
    expected = sorted(stored, key=lambda d: (-d.decided_at.timestamp(), d.decision_id))
    assert [d.decision_id for d in seen] == [d.decision_id for d in expected]


async def test_decisions_are_filtered_by_account_ip_and_time(pool):
    mine, other_ip, other_account = (
        decision(5),
        decision(6, ip="198.51.100.1"),
        decision(7, account_id="0190f5a4-0000-7000-8000-0000000000bb"),
    )
    old = decision(-60)
    await decisions.insert_decisions(pool, [mine, other_ip, other_account, old])

    async def ids(**filters) -> list[uuid.UUID]:
        query = dict(account_id="", ip="", since=None) | filters
        rows = await decisions.list_decisions(pool, limit=10, after=None, **query)
        return [d.decision_id for d in rows]

    assert await ids(account_id=ACCOUNT, ip="133.1.2.3") == [mine.decision_id, old.decision_id]
    assert await ids(ip="198.51.100.1") == [other_ip.decision_id]
    assert await ids(account_id=ACCOUNT, since=START) == [other_ip.decision_id, mine.decision_id]
