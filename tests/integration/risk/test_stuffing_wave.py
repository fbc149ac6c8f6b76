"""The stuffing watch on PostgreSQL with a simulated clock: failed sign-ins reported
through the RecordOutcome use case, the watch run once per simulated second, as its
job does. Nothing here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest_asyncio

from services.risk.domain.alerts import STUFFING_WAVE, Alert
from services.risk.domain.outcomes import OutcomeEvent
from services.risk.domain.policy import Policy, PolicyChange
from services.risk.storage import alerts as alert_store
from services.risk.storage import counters
from services.risk.storage import policies as policy_store
from services.risk.use_cases.alerts import Alerts
from services.risk.use_cases.counting import Counting
from services.risk.use_cases.decisions import Decisions
from services.risk.use_cases.policies import Policies, RiskState, RuleUpdate

NOISY = ("203.0.113.10", "198.51.100.20")
OPERATOR = "operator:aiko"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Wave:
    """Risk's use cases on one database, driven second by simulated second."""

    pool: asyncpg.Pool
    clock: Clock
    state: RiskState
    alerts: Alerts
    counting: Counting
    outcomes: Decisions
    policies: Policies
    thin: int = 0
    raised_at: dict[str, float] = field(default_factory=dict)

    @property
    def policy(self) -> Policy:
        return self.state.policy

    async def failed(self, ip: str, at: datetime, represents: int = 1) -> None:
        await self.outcomes.record_outcome(
            OutcomeEvent(
                outcome="password_wrong", decision_id="", account_id="", wallet_id="",
                payer_id="", session_id="", ip=ip, device_id="", amount_minor=0, currency="",
                movement_id="", identifier_hash=f"h-{ip}", occurred_at=at,
                represents=represents,
            )
        )  # fmt: skip

    async def second(self, drill_rate: bool = True, quiet_ip: str | None = None) -> None:
        """One simulated second: this second's failures (at the drill's rate of four a
        second: one from each noisy proxy, two from addresses used once), then a pass
        of the watch at its end."""
        start = self.clock.now
        if drill_rate:
            ips = [NOISY[0], NOISY[1], self._thin(), self._thin()]
        else:
            ips = [quiet_ip] if quiet_ip else []
        for n, ip in enumerate(ips):
            await self.failed(ip, start + timedelta(seconds=n / 4))
        self.clock.now = start + timedelta(seconds=1)
        # As the counter sync does every second: this replica's counts reach the table.
        await self.counting.flush()
        await self.alerts.watch_stuffing()

    def _thin(self) -> str:
        self.thin += 1
        return f"100.64.{self.thin}.7"

    async def stuffing_alerts(self) -> list[Alert]:
        return [
            a
            for a in await alert_store.list_alerts(self.pool, status="", limit=50, after=None)
            if a.rule_id == STUFFING_WAVE
        ]


@pytest_asyncio.fixture
async def wave(pool: asyncpg.Pool) -> Wave:
    # Started at the real time, so the alerts' stored times and the simulated clock agree.
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    state = RiskState(pool)
    await state.load()
    policies = Policies(pool, state, asyncio.Event())
    # Sized for the drill's deployment, as the drill sizes it with UpdateRule.
    await policies.update_rule(
        RuleUpdate(
            STUFFING_WAVE, enabled=None, verdict=None, auto_action=None,
            thresholds={"min_failures": 120, "min_failures_per_second": 1},
        ),
        actor=OPERATOR, reason="sized for the drill",
    )  # fmt: skip
    store = counters.CounterStore(pool)
    counting = Counting(store, store, state, clock=clock)
    return Wave(
        pool=pool,
        clock=clock,
        state=state,
        alerts=Alerts(pool, state, home_countries=("JP",), clock=clock),
        counting=counting,
        outcomes=Decisions(pool, counting, lambda ip: ""),
        policies=policies,
    )


async def contained_wave(wave: Wave) -> int:
    """Quiet seconds, then the wave until the policy contains it; the seconds it took."""
    for _ in range(3):
        await wave.second(drill_rate=False)
    for elapsed in range(1, 31):
        await wave.second()
        if wave.policy.contained_networks:
            return elapsed
    raise AssertionError("the wave was never contained")


async def test_a_wave_at_the_drills_rate_is_alerted_and_contained_within_10_seconds(wave):
    version_before = wave.policy.version
    elapsed = await contained_wave(wave)
    assert elapsed <= 10, f"contained {elapsed} s into the wave"
    [alert] = await wave.stuffing_alerts()
    evidence = alert.evidence
    assert evidence["failures_per_second"] >= evidence["min_failures_per_second"] == 1
    assert evidence["failed_sign_ins"] < evidence["min_failures"]  # the long window is far off
    policy = wave.policy
    assert policy.contained_networks == frozenset({"203.0.113.0/24", "198.51.100.0/24"})
    assert policy.containment_alert_id == str(alert.alert_id)
    assert policy.containment_until == wave.clock.now + timedelta(seconds=900)
    assert policy.version == version_before + 1
    # Persisted, so every replica and WatchPolicies follower gets the same version.
    assert (await policy_store.load_policy(wave.pool))[0].contained_networks == (
        policy.contained_networks
    )
    taken = json.loads(alert.auto_action_taken)["containment"]
    assert (taken["contained_networks"], sorted(taken["networks"])) == (
        2, ["198.51.100.0/24", "203.0.113.0/24"],
    )  # fmt: skip
    [change, *_] = await policy_store.list_policy_changes(wave.pool, limit=10, after=None)
    assert (change.actor, change.policy_version) == ("risk:auto", policy.version)
    assert str(alert.alert_id) in change.reason
    assert sorted(change.change["policy"]["networks"]) == ["198.51.100.0/24", "203.0.113.0/24"]


async def test_normal_failed_sign_ins_raise_no_alert_and_contain_nothing(wave):
    version = wave.policy.version
    # A failed sign-in every other second, each from its own network, for two minutes:
    # a busy day for the drill's deployment, under its rate and its long-window count.
    for second in range(120):
        quiet_ip = f"100.65.{second}.7" if second % 2 else None
        await wave.second(drill_rate=False, quiet_ip=quiet_ip)
    assert await wave.stuffing_alerts() == []
    assert wave.policy.version == version


async def test_while_the_wave_lasts_its_containment_grows_and_the_next_alert_contains_it_again(
    wave,
):
    await contained_wave(wave)
    first = wave.policy
    # Thin addresses now repeat in one network, which then qualifies too.
    for _ in range(6):
        await wave.failed("100.70.1.7", wave.clock.now)
        await wave.second()
    grown = wave.policy
    assert grown.contained_networks == first.contained_networks | {"100.70.1.0/24"}
    assert (grown.version, grown.containment_alert_id) == (
        first.version + 1, first.containment_alert_id,
    )  # fmt: skip
    # The wave goes on past the rule's quiet period (its 300 s window), in steps of half
    # a minute: the rule raises its next alert, which contains the networks of its window.
    for _ in range(12):
        for n in range(40):
            await wave.failed(NOISY[n % 2], wave.clock.now)
        wave.clock.now += timedelta(seconds=30)
        await wave.counting.flush()
        await wave.alerts.watch_stuffing()
    later = wave.policy
    alerts = await wave.stuffing_alerts()
    assert len(alerts) == 2
    assert later.containment_alert_id == str(alerts[0].alert_id) != first.containment_alert_id
    assert later.contained_networks == frozenset({"203.0.113.0/24", "198.51.100.0/24"})
    assert later.containment_until is not None
    assert later.containment_until > grown.containment_until
    # A version when the set changes or a new alert takes over, not one per pass.
    assert later.version == grown.version + 1


async def test_an_operator_lift_ends_it_at_once_and_risk_does_not_contain_again_for_that_alert(
    wave,
):
    await contained_wave(wave)
    alert_id = wave.policy.containment_alert_id
    lifted = await wave.policies.change(
        PolicyChange("lift_containment", True), actor=OPERATOR, reason="a carrier's NAT"
    )
    assert (lifted.contained_networks, lifted.containment_until) == (frozenset(), None)
    assert wave.policy == lifted
    for _ in range(20):  # the wave goes on
        await wave.second()
    assert wave.policy.contained_networks == frozenset()
    assert wave.policy.version == lifted.version
    [change, *_] = await policy_store.list_policy_changes(wave.pool, limit=10, after=None)
    assert (change.actor, change.reason, change.policy_version) == (
        OPERATOR, "a carrier's NAT", lifted.version,
    )  # fmt: skip
    assert change.change == {
        "policy": {"switch": "lift_containment", "value": True, "alert_id": alert_id,
                   "networks": 2},
    }  # fmt: skip
    [alert] = await wave.stuffing_alerts()
    taken = json.loads(alert.auto_action_taken)["containment"]
    assert (taken["lifted_by"], taken["lifted_because"]) == (OPERATOR, "a carrier's NAT")


async def test_a_containment_ends_by_itself_when_its_time_passes_and_the_end_is_audited(wave):
    await contained_wave(wave)
    policy = wave.policy
    assert policy.containment_until is not None
    # The wave stops; the watch goes on every second until the containment's end.
    while wave.clock.now < policy.containment_until:
        wave.clock.now += timedelta(seconds=60)
        await wave.alerts.watch_stuffing()
    ended = wave.policy
    assert (ended.contained_networks, ended.containment_until, ended.containment_alert_id) == (
        frozenset(), None, "",
    )  # fmt: skip
    assert ended.version == policy.version + 1
    [change, *_] = await policy_store.list_policy_changes(wave.pool, limit=10, after=None)
    assert change.actor == "risk:auto"
    assert policy.containment_alert_id in change.reason
    assert change.change == {
        "policy": {"switch": "containment", "value": False, "key": policy.containment_alert_id}
    }
    [alert] = await wave.stuffing_alerts()
    assert "ended_at" in json.loads(alert.auto_action_taken)["containment"]


async def test_a_report_standing_for_a_sampled_flood_raises_the_wave_and_counts_its_address_once(
    wave,
):
    for _ in range(3):
        await wave.second(drill_rate=False)
    # Identity's one report past its rate, standing for the 40 refusals it left out:
    # 40 failures in the 10 s window is 4/s, past the rule's 1/s.
    await wave.failed("198.51.100.7", wave.clock.now, represents=40)
    await wave.second(drill_rate=False)
    [alert] = await wave.stuffing_alerts()
    assert alert.evidence["failures_per_second"] >= 4
    # Its address and network counted the one attempt it names, below containment's 3.
    assert "198.51.100.0/24" not in list(wave.policy.contained_networks)
