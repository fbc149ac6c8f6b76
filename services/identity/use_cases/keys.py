"""Identity's token signing keys: stored sealed, rotated on a schedule, published early.

Three keys are published at any time: ``current`` signs, ``previous`` still
verifies tokens signed before the last rotation, and ``next`` is announced a
whole rotation period before it signs, so no verifier ever meets an unknown kid.
Replicas agree through the database; each reloads the ring every minute.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from services.identity.domain.sealing import SecretBox
from services.identity.storage import keys as key_store
from services.runtime.tokens import SigningKey, generate_signing_key, jwks_document

log = structlog.get_logger(__name__)

_PURPOSE = "signing-key"


class KeyRing:
    def __init__(self, pool: asyncpg.Pool, box: SecretBox, *, rotate_every: timedelta) -> None:
        self._pool = pool
        self._box = box
        self._rotate_every = rotate_every
        self._current: SigningKey | None = None
        self._published: list[SigningKey] = []

    @property
    def current(self) -> SigningKey:
        if self._current is None:
            raise RuntimeError("signing keys not loaded")
        return self._current

    def jwks(self) -> dict[str, Any]:
        return jwks_document(self._published)

    async def jwks_fresh(self) -> dict[str, Any]:
        """The key set as stored now, for identity's own verifier after a rotation elsewhere."""
        await self.load()
        return self.jwks()

    async def start(self) -> None:
        await self.rotate_if_due()
        await self.load()

    async def rotate_if_due(self, *, force: bool = False) -> bool:
        """Create missing keys and rotate when the current key is old; True if rotated."""
        async with self._pool.acquire() as conn, conn.transaction():
            await key_store.lock_ring(conn)
            current = await key_store.current_key(conn)
            nxt = await key_store.next_kid(conn)
            if nxt is None:
                nxt = await self._insert(conn, "next")
            if current is None:
                await self._insert(conn, "current")
                return False
            due = current["activated_at"] + self._rotate_every <= datetime.now(UTC)
            if not (due or force):
                return False
            await key_store.promote_next(conn, nxt)
            await self._insert(conn, "next")
            log.info("signing_keys.rotated", kid=nxt)
            return True

    async def load(self) -> None:
        rows = await key_store.published_keys(self._pool)
        keys = {
            row["state"]: SigningKey.from_private_pem(
                row["kid"], self._box.open(row["sealed_private_key"], purpose=_PURPOSE)
            )
            for row in rows
        }
        self._current = keys["current"]
        self._published = [
            keys[state] for state in ("current", "previous", "next") if state in keys
        ]

    async def reload(self) -> None:
        """Rotate when due and pick up rotations made by other replicas."""
        await self.rotate_if_due()
        await self.load()

    async def _insert(self, conn: asyncpg.Connection, state: str) -> str:
        key = generate_signing_key()
        await key_store.insert_key(
            conn,
            kid=key.kid,
            state=state,
            sealed=self._box.seal(key.private_pem(), purpose=_PURPOSE),
        )
        return key.kid
