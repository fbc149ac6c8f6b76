"""What every replica keeps in memory: the policy and the rules in force.

Each replica reads the policy version and the rules revision a few times a
second (one tiny query), so a change made through any replica reaches every
replica's WatchPolicies subscribers and assessments within about a second; the
replica that made the change applies it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import structlog

from services.risk import storage
from services.risk.domain.policy import Policy
from services.risk.domain.rules import RuleBook
from services.runtime.outages import OutageLog

log = structlog.get_logger(__name__)


class RiskState:
    def __init__(self, pool: asyncpg.Pool, *, poll_seconds: float) -> None:
        self._pool = pool
        self._poll_seconds = poll_seconds
        self.policy = Policy()
        self.rules = RuleBook()
        self._rules_revision = -1
        self._changed = asyncio.Event()

    async def load(self) -> None:
        policy, revision = await storage.load_policy(self._pool)
        await self.publish_policy(policy)
        if revision != self._rules_revision:
            self.rules = RuleBook(await storage.load_rule_overrides(self._pool))
            self._rules_revision = revision

    async def reload_rules(self) -> None:
        _, revision = await storage.load_policy(self._pool)
        self.rules = RuleBook(await storage.load_rule_overrides(self._pool))
        self._rules_revision = revision

    async def publish_policy(self, policy: Policy) -> None:
        if policy.version > self.policy.version or self.policy.updated_at is None:
            self.policy = policy
            # Wake every subscriber once; later waiters get a fresh event.
            self._changed.set()
            self._changed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Background job: follow changes made through other replicas."""
        outage = OutageLog(log, "state.refresh_failed")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._poll_seconds)
            if stop.is_set():
                return
            try:
                await self.load()
            except Exception as error:
                # Keep enforcing the last known policy and rules while the database is away.
                outage.failed(error)
            else:
                outage.ok()

    async def watch(self, stopping: asyncio.Event) -> AsyncIterator[Policy]:
        """The current policy, then every newer one, until ``stopping`` is set."""
        sent = -1
        stopper = asyncio.ensure_future(stopping.wait())
        try:
            while not stopping.is_set():
                if self.policy.version > sent or sent < 0:
                    policy = self.policy
                    sent = policy.version
                    yield policy
                    continue
                changed = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait({changed, stopper}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
        finally:
            stopper.cancel()
