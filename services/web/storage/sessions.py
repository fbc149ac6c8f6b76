"""Browser sessions in the web service's database, sealed, keyed by the id's hash."""

from __future__ import annotations

import asyncpg
from cryptography.exceptions import InvalidTag

from services.gateway.domain.sealing import SecretBox
from services.web.domain.sessions import BrowserSession, id_hash

_PURPOSE = "browser-session"
# A browser nobody signed in from (a visit, a crawler) is forgotten within the hour.
ANONYMOUS_SECONDS = 3600.0


class SessionStore:
    def __init__(self, pool: asyncpg.Pool, box: SecretBox, idle_seconds: float) -> None:
        self._pool = pool
        self._box = box
        self._idle = idle_seconds

    async def load(self, session_id: str) -> BrowserSession | None:
        sealed = await self._pool.fetchval(
            "select sealed from browser_sessions where id_hash = $1 and expires_at > now()",
            id_hash(session_id),
        )
        if sealed is None:
            return None
        try:
            return BrowserSession.loads(self._box.open(bytes(sealed), purpose=_PURPOSE))
        except (InvalidTag, ValueError):
            # Sealed under another key (WEB_SECRETS_KEY was replaced): a new session.
            return None

    async def save(self, session_id: str, session: BrowserSession) -> None:
        await self._pool.execute(
            """
            insert into browser_sessions (id_hash, sealed, expires_at)
            values ($1, $2, now() + make_interval(secs => $3))
            on conflict (id_hash) do update
               set sealed = excluded.sealed, expires_at = excluded.expires_at, updated_at = now()
            """,
            id_hash(session_id),
            self._box.seal(session.dumps(), purpose=_PURPOSE),
            self._idle if session.signed_in else min(self._idle, ANONYMOUS_SECONDS),
        )

    async def drop(self, session_id: str) -> None:
        await self._pool.execute(
            "delete from browser_sessions where id_hash = $1", id_hash(session_id)
        )

    async def forget_expired(self) -> int:
        status = await self._pool.execute("delete from browser_sessions where expires_at <= now()")
        return int(status.split()[-1])
