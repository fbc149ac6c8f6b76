"""Cases and the victim query on PostgreSQL: one case per key, indicators kept as
confirmed, and the sessions an attacker reached followed to the money they moved."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from services.risk.domain.cases import Indicators
from services.risk.domain.outcomes import OutcomeEvent
from services.risk.storage import cases, outcomes

ACCOUNT = "0190f5a4-0000-7000-8000-0000000000aa"
START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


async def open_case(pool, key: str = "k-1"):
    return await cases.open_case(
        pool, idempotency_key=f"wallet:{key}", source="customer_report", account_id=ACCOUNT,
        wallet_id="", alert_id="", movement_id="m-1", description="not me",
    )  # fmt: skip


async def test_racing_opens_of_one_key_give_one_case(pool):
    opened = await asyncio.gather(*(open_case(pool) for _ in range(5)))
    assert len({case.case_id for case in opened}) == 1
    case = opened[0]
    assert (case.status, case.source, case.notes, case.indicators) == (
        "open", "customer_report", ("not me",), None,
    )  # fmt: skip
    assert await cases.get_case(pool, case.case_id) == case


async def test_an_update_changes_only_what_it_names_and_appends_notes(pool):
    case = await open_case(pool)
    updated = await cases.update_case(
        pool, case.case_id, status="investigating", assignee=None, note="sre-1: looking"
    )
    assert updated is not None
    assert (updated.status, updated.assignee, updated.notes) == (
        "investigating", "", ("not me", "sre-1: looking"),
    )  # fmt: skip
    assert (
        await cases.update_case(pool, uuid.uuid4(), status="closed", assignee=None, note=None)
        is None
    )


async def test_confirmed_indicators_read_back_as_given(pool):
    case = await open_case(pool)
    indicators = Indicators(
        ip_addresses=("203.0.113.7",), subnets=("198.51.100.0/24",), device_ids=("d-1",),
        window_start=START, window_end=START + timedelta(hours=1),
    )  # fmt: skip
    confirmed = await cases.update_case(
        pool, case.case_id, status="confirmed_fraud", assignee=None, note="x",
        indicators=indicators,
    )  # fmt: skip
    assert confirmed is not None and confirmed.indicators == indicators


async def test_cases_page_newest_first_and_filter_by_status(pool):
    opened = [await open_case(pool, f"k-{i}") for i in range(5)]
    await cases.update_case(pool, opened[0].case_id, status="closed", assignee=None, note=None)
    first = await cases.list_cases(pool, status="", limit=3, after=None)
    rest = await cases.list_cases(
        pool, status="", limit=3, after=(first[-1].opened_at, first[-1].case_id)
    )
    expected = sorted(opened, key=lambda c: (-c.opened_at.timestamp(), c.case_id))
    assert [c.case_id for c in first + rest] == [c.case_id for c in expected]
    assert [
        c.case_id for c in await cases.list_cases(pool, status="closed", limit=9, after=None)
    ] == [opened[0].case_id]


def event(outcome: str, minutes: int, **fields: object) -> OutcomeEvent:
    values: dict[str, object] = dict(
        outcome=outcome, decision_id="", account_id=ACCOUNT, wallet_id="", payer_id="",
        session_id="s-1", ip="203.0.113.7", device_id="", amount_minor=0, currency="",
        movement_id="", identifier_hash="", occurred_at=START + timedelta(minutes=minutes),
    )  # fmt: skip
    values.update(fields)
    return OutcomeEvent(**values)  # type: ignore[arg-type]


async def test_the_victim_query_follows_attacker_sessions_to_their_money(pool):
    for outcome in (
        event("login_succeeded", 1),
        event("top_up_completed", 2, wallet_id="w-1", amount_minor=5000, currency="JPY",
              movement_id="m-1"),
        event("payment_captured", 3, wallet_id="w-1", amount_minor=4000, currency="JPY",
              movement_id="m-2"),
        # Another person's sign-in from elsewhere, and one outside the window.
        event("login_succeeded", 4, account_id="0190f5a4-0000-7000-8000-0000000000bb",
              session_id="s-2", ip="133.1.2.3"),
        event("login_succeeded", 500, session_id="s-3"),
    ):  # fmt: skip
        await outcomes.record_outcome(pool, outcome)
    rows = await outcomes.find_affected(
        pool,
        ips=["203.0.113.7"],
        subnets=[],
        devices=[],
        start=START,
        end=START + timedelta(hours=1),
    )
    reached = [(a, s, m and (m.movement_id, m.kind, m.amount_minor)) for a, s, m in rows]
    assert reached == [
        (ACCOUNT, "s-1", ("m-1", "top_up", 5000)),
        (ACCOUNT, "s-1", ("m-2", "payment", 4000)),
    ]  # fmt: skip
    by_subnet = await outcomes.find_affected(
        pool,
        ips=[],
        subnets=["203.0.113.0/24"],
        devices=[],
        start=START,
        end=START + timedelta(days=1),
    )
    assert {session for _, session, _ in by_subnet} == {"s-1", "s-3"}


async def test_an_outcome_reported_twice_is_stored_once(pool):
    paid = event("payment_captured", 3, wallet_id="w-1", amount_minor=4000, currency="JPY",
                 movement_id="m-2")  # fmt: skip
    await outcomes.record_outcome(pool, paid)
    await outcomes.record_outcome(pool, paid)
    assert await pool.fetchval("select count(*) from outcomes") == 1
