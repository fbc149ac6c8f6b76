"""Kill switches, the country policy and the rules: what every replica keeps in
memory, and the operators' changes to them.

Each replica reads the policy version and the rules revision a few times a
second (one tiny query, the refresh job), so a change made through any replica
reaches every replica's WatchPolicies subscribers and assessments within about a
second; the replica that made the change applies it at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.risk.domain.policy import Policy, PolicyChange, PolicyChangeRecord
from services.risk.domain.rules import Rule, RuleBook, Verdict
from services.risk.storage import policies as policy_store
from services.runtime.errors import InvalidArgument
from services.runtime.jobs import wait_for_any


class RiskState:
    """The policy and the rules in force on this replica (the PolicyInForce port)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.policy = Policy()
        self.rules = RuleBook()
        self._rules_revision = -1
        self._changed = asyncio.Event()

    async def load(self) -> None:
        """Follow changes made through other replicas (run by the refresh job)."""
        policy, revision = await policy_store.load_policy(self._pool)
        await self.publish_policy(policy)
        if revision != self._rules_revision:
            self.rules = RuleBook(await policy_store.load_rule_overrides(self._pool))
            self._rules_revision = revision

    async def reload_rules(self) -> None:
        _, revision = await policy_store.load_policy(self._pool)
        self.rules = RuleBook(await policy_store.load_rule_overrides(self._pool))
        self._rules_revision = revision

    async def publish_policy(self, policy: Policy) -> None:
        if policy.version > self.policy.version or self.policy.updated_at is None:
            self.policy = policy
            # Wake every subscriber once; later waiters get a fresh event.
            self._changed.set()
            self._changed = asyncio.Event()

    async def watch(self, stopping: asyncio.Event) -> AsyncIterator[Policy]:
        """The current policy, then every newer one, until ``stopping`` is set."""
        sent = -1
        while not stopping.is_set():
            if self.policy.version > sent or sent < 0:
                policy = self.policy
                sent = policy.version
                yield policy
                continue
            await wait_for_any(self._changed, stopping)


@dataclass(frozen=True)
class RuleUpdate:
    """An operator's change to one rule; None and empty mean "leave as it is"."""

    rule_id: str
    enabled: bool | None
    thresholds: Mapping[str, float]
    verdict: Verdict | None
    auto_action: str | None


class Policies:
    def __init__(self, pool: asyncpg.Pool, state: RiskState, stopping: asyncio.Event) -> None:
        self._pool = pool
        self._state = state
        self._stopping = stopping

    async def current(self) -> Policy:
        """The stored policy (newer than this replica's, if another replica changed it)."""
        policy, _ = await policy_store.load_policy(self._pool)
        await self._state.publish_policy(policy)
        return policy

    async def change(self, change: PolicyChange, *, actor: str, reason: str) -> Policy:
        policy = await policy_store.change_policy(self._pool, change, actor=actor, reason=reason)
        await self._state.publish_policy(policy)
        return policy

    def watch(self) -> AsyncIterator[Policy]:
        return self._state.watch(self._stopping)

    async def history(
        self, *, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[PolicyChangeRecord]:
        return await policy_store.list_policy_changes(self._pool, limit=limit, after=after)

    async def rules(self) -> list[Rule]:
        await self._state.reload_rules()
        return list(self._state.rules.rules.values())

    async def update_rule(self, update: RuleUpdate, *, actor: str, reason: str) -> Rule:
        await self._state.reload_rules()
        rule = self._state.rules.rules.get(update.rule_id)
        if rule is None:
            raise InvalidArgument([("rule_id", "must name a rule (see ListRules)")])
        unknown = [name for name in update.thresholds if name not in rule.thresholds]
        if unknown:
            raise InvalidArgument(
                [(f"thresholds[{name}]", "is not a threshold of this rule") for name in unknown]
            )
        changed = rule.changed(
            enabled=update.enabled, thresholds=dict(update.thresholds), verdict=update.verdict
        )
        change: dict[str, Any] = {"thresholds": dict(update.thresholds)}
        if update.auto_action is not None:
            changed = dataclasses.replace(changed, auto_action=update.auto_action)
            change["auto_action"] = update.auto_action
        if update.enabled is not None:
            change["enabled"] = update.enabled
        if update.verdict is not None:
            change["verdict"] = update.verdict.name
        await policy_store.save_rule(self._pool, changed, actor=actor, reason=reason, change=change)
        await self._state.reload_rules()
        return self._state.rules[rule.rule_id]
