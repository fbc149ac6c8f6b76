"""Where identity's database announces contact changes (migration 0006's triggers).

A NOTIFY on ``CONTACT_CHANGES_CHANNEL`` carries the id of an account whose
GetRegisteredContacts answer changed; it is sent when the change commits.
"""

from __future__ import annotations

import asyncpg

CONTACT_CHANGES_CHANNEL = "identity_contact_changes"


async def still_connected(conn: asyncpg.Connection) -> None:
    """A round trip on the listening connection: one that died silently raises here."""
    await conn.fetchval("select 1")
