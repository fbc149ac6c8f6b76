"""The policy, rule overrides and their audit trail on PostgreSQL."""

from __future__ import annotations

import asyncio

from services.risk.domain.policy import PolicyChange
from services.risk.domain.rules import RuleBook, Verdict
from services.risk.storage import policies


async def test_a_fresh_database_holds_the_default_policy_at_version_zero(pool):
    policy, revision = await policies.load_policy(pool)
    assert (policy.version, policy.blocked_countries, policy.updated_at is not None) == (
        0, frozenset(), True,
    )  # fmt: skip
    assert revision == 0
    assert await policies.load_rule_overrides(pool) == []


async def test_each_change_bumps_the_version_and_is_audited_with_actor_and_reason(pool):
    changed = await policies.change_policy(
        pool, PolicyChange("country", True, key="KP"), actor="operator:sre-1", reason="surge"
    )
    assert (changed.version, changed.blocked_countries) == (1, frozenset({"KP"}))
    assert (await policies.load_policy(pool))[0] == changed
    [record] = await policies.list_policy_changes(pool, limit=10, after=None)
    assert (record.actor, record.reason, record.policy_version) == ("operator:sre-1", "surge", 1)
    assert record.change == {"policy": {"switch": "country", "key": "KP", "value": True}}


async def test_racing_changes_each_get_their_own_version(pool):
    await asyncio.gather(
        *(
            policies.change_policy(
                pool, PolicyChange("external_login", True, key=f"idp{i}"), actor="a", reason="r"
            )
            for i in range(8)
        )
    )
    policy, _ = await policies.load_policy(pool)
    assert policy.version == 8
    assert len(policy.external_login_suspended_providers) == 8
    versions = [
        c.policy_version for c in await policies.list_policy_changes(pool, limit=20, after=None)
    ]
    assert sorted(versions) == list(range(1, 9))


async def test_a_saved_rule_override_comes_back_and_raises_the_rules_revision(pool):
    _, before = await policies.load_policy(pool)
    rule = RuleBook()["login.ip_failures"].changed(
        enabled=False, thresholds={"max_failures": 5}, verdict=Verdict.DENY
    )
    await policies.save_rule(pool, rule, actor="a", reason="drill", change={"enabled": False})
    [override] = await policies.load_rule_overrides(pool)
    assert (override.rule_id, override.enabled, override.verdict) == (
        "login.ip_failures", False, Verdict.DENY,
    )  # fmt: skip
    assert override.thresholds["max_failures"] == 5
    _, after = await policies.load_policy(pool)
    assert after > before
    [audit] = await policies.list_policy_changes(pool, limit=10, after=None)
    assert audit.change == {"rule": "login.ip_failures", "enabled": False}


async def test_the_audit_trail_pages_newest_first(pool):
    for i in range(5):
        await policies.change_policy(
            pool, PolicyChange("wind_down", i % 2 == 0), actor="a", reason=f"r{i}"
        )
    first = await policies.list_policy_changes(pool, limit=3, after=None)
    rest = await policies.list_policy_changes(
        pool, limit=3, after=(first[-1].changed_at, first[-1].change_id)
    )
    assert [c.policy_version for c in first + rest] == [5, 4, 3, 2, 1]
