"""Operators sign in with their name and password; a session is a random cookie value."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from services.console.domain.operators import OPERATOR_NAME, OperatorBook
from services.console.domain.records import Session
from services.console.storage import actions as action_store
from services.console.storage import sessions as session_store


class SignInRefused(Exception):
    """Wrong name or password, or too many failures: the same words for each."""


@dataclass
class SignIn:
    pool: asyncpg.Pool
    book: OperatorBook
    session_seconds: int
    failures_allowed: int

    async def sign_in(self, name: str, password: str, client: str = "") -> tuple[str, Session]:
        """Failures are counted per name and client address: guessing from one address
        stops there, but cannot lock the operator out from the address they work at."""
        # The name goes into the database and the audit only once it has the right shape.
        if not OPERATOR_NAME.match(name) or not password:
            raise SignInRefused
        client = client[:64]
        if await session_store.recent_failures(self.pool, name, client) >= self.failures_allowed:
            raise SignInRefused
        if not await asyncio.to_thread(self.book.verify, name, password):
            await session_store.record_failure(self.pool, name, client)
            raise SignInRefused
        token = secrets.token_urlsafe(32)
        session = Session(
            operator=name,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=datetime.now(UTC) + timedelta(seconds=self.session_seconds),
        )
        await session_store.create(
            self.pool, token, session.operator, session.csrf_token, session.expires_at
        )
        await action_store.record(
            self.pool, operator=name, action="sign-in", target="console", reason="", outcome="done"
        )
        return token, session

    async def session(self, token: str) -> Session | None:
        if not token or len(token) > 100:
            return None
        return await session_store.find(self.pool, token)

    async def end(self, token: str) -> None:
        if token and len(token) <= 100:
            await session_store.end(self.pool, token)

    async def sign_out(self, token: str, operator: str) -> None:
        await session_store.end(self.pool, token)
        await action_store.record(
            self.pool,
            operator=operator,
            action="sign-out",
            target="console",
            reason="",
            outcome="done",
        )
