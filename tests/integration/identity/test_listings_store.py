"""What owners and operators are shown, read from a real PostgreSQL as typed rows: live
sessions and the security log, a page at a time."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from services.identity.storage import security_log as log_store
from services.identity.storage import sessions as session_store


async def an_account(pool: asyncpg.Pool) -> uuid.UUID:
    account_id = uuid.uuid4()
    await pool.execute(
        "insert into accounts (id, status, payer_id, password_hash) values ($1, 'active', $2, 'x')",
        account_id,
        uuid.uuid4(),
    )
    return account_id


async def test_only_live_sessions_are_listed_with_their_methods(pool: asyncpg.Pool):
    account_id = await an_account(pool)
    async with pool.acquire() as conn, conn.transaction():
        kept = await session_store.open_session(
            conn,
            account_id=account_id,
            device_id="phone-key",
            methods=["password", "totp"],
            assurance_level=2,
            ip="192.0.2.7",
            lifetime=timedelta(days=30),
            refresh_hash=b"kept",
        )
        ended = await session_store.open_session(
            conn,
            account_id=account_id,
            device_id="laptop",
            methods=["password"],
            assurance_level=1,
            ip="192.0.2.8",
            lifetime=timedelta(days=30),
            refresh_hash=b"ended",
        )
        await session_store.revoke_sessions(
            conn,
            account_id=account_id,
            reason="signed out",
            token_lifetime=timedelta(minutes=5),
            only=ended["id"],
        )
        listed = await session_store.live_sessions(conn, account_id)

    assert [(s.session_id, s.device_id, s.methods, s.assurance_level) for s in listed] == [
        (kept["id"], "phone-key", ("password", "totp"), 2)
    ]
    assert listed[0].ip_address == "192.0.2.7"


async def test_the_security_log_pages_newest_first_without_repeating_an_event(
    pool: asyncpg.Pool,
):
    account_id = await an_account(pool)
    async with pool.acquire() as conn:
        for n in range(5):
            await log_store.log_event(
                conn, account_id=account_id, kind=f"event.{n}", details={"n": n}
            )
        first = await log_store.security_events(conn, account_id, before=None, limit=3)
        rest = await log_store.security_events(conn, account_id, before=first[-1].position, limit=3)

    events = first + rest
    assert len(events) == 5 and len({event.event_id for event in events}) == 5
    assert [event.occurred_at for event in events] == sorted(
        (event.occurred_at for event in events), reverse=True
    )
    assert {event.details["n"] for event in events} == set(range(5))
    assert all(event.actor == "self" for event in events)
