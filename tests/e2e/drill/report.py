"""The drill's report: its size, phases, kill-switch flips and checks, and the
timeline it prints.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class DrillSize:
    """How big the story is. ``make test`` runs a small one, ``make drill`` a larger one."""

    people: int = 48
    passkey_share: float = 0.35
    totp_share: float = 0.35  # the rest only ever use a password
    external_id_people: int = 3  # password-only people who also sign in with LINE
    stores: int = 6
    attack_pairs: int = 260
    reused_pairs: int = 8  # pairs in the list whose password is right
    unknown_share: float = 0.3  # pairs for addresses that do not exist
    mailbox_compromised: int = 2  # of the reused: the attacker reads their inbox too
    attacker_ips: int = 36  # spread thinly, under the per-IP limits
    noisy_ips: int = 2  # hammer with many identifiers each, and get throttled
    noisy_attempts: int = 30
    domestic_share: float = 0.25
    reporters: int = 3
    attack_concurrency: int = 16
    people_concurrency: int = 8
    # Alert thresholds tuned for the size of the deployment (an operator setting);
    # None keeps the rule as shipped.
    stuffing_alert_failures: int | None = 120
    # Failed sign-ins per second over the last 10 s that make a wave (seen in seconds).
    stuffing_alert_rate: float | None = 1.0
    foreign_alert_attempts: int | None = 100
    # How long the drill waits for a switch to hold; the report gives how long it took.
    switch_deadline_seconds: float = 60.0
    seed: int = 7


@dataclass
class Phase:
    name: str
    title: str
    started_at: float
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# How soon a kill switch holds everywhere, as the README promises. The report says
# whether each switch kept it; the check fails only when a switch never held (how
# fast a busy machine answers is for this report to show, not for a test to fail on).
SWITCH_PROMISE_SECONDS = 2.0


@dataclass(frozen=True)
class SwitchFlip:
    switch: str
    reason: str
    effective_after_seconds: float | None
    probe: str


# The control of docs/incident.md each check proves, by check name (a switch's
# checks share one, ``switch_effective:<switch>``).
CONTROLS = {
    "the_attack_was_real": "the drill's own premise: the leaked list holds right passwords",
    "password_only_session_gets_no_wallet_token": (
        "the group ID never moves money: wallet tokens need assurance level 2"
    ),
    "stuffing_throttled_by_risk": "risk scoring before any hash: per-IP and per-subnet limits",
    "new_device_needs_second_factor": "a second factor for every new device",
    "attacker_got_no_wallet_token": (
        "wallet tokens only for passkey or password-and-TOTP sessions on a registered"
        " device, outside the cool-off"
    ),
    "attacker_moved_no_money": "the wallet accepts only wallet-audience tokens",
    "legitimate_people_signed_in_during_attack": "defences that spare legitimate sign-ins",
    "legitimate_people_paid_during_attack": "defences that spare legitimate payments",
    "stuffing_alert_raised_without_a_call": "real-time detection: the stuffing alert",
    "operators_told_by_mail": "operator alerts delivered by mail",
    "switch_effective": "kill switches effective on every replica within seconds",
    "blocked_countries_refused": "country policy",
    "sign_ups_suspended": "the sign-up kill switch",
    "victims_found_exactly": "victim identification as a query over recorded events",
    "compensation_settles_and_reruns_change_nothing": (
        "compensation as idempotent ledger operations"
    ),
    "forced_reset_one_notice_each_at_the_registered_address": (
        "forced reset, each notice to the registered address only"
    ),
    "every_old_session_is_dead": "credential changes end every other session",
    "every_holder_told_of_wind_down": "wind-down: every holder is told",
    "every_balance_paid_out_or_listed": "wind-down: every balance paid out or listed unclaimed",
    "ledger_balances": "double-entry ledger, reconciled",
    "operator_actions_audited": "every operator action audited with who and why",
    "reset_links_only_to_registered_addresses": (
        "a reset reaches the registered address only; the reset API has no destination"
    ),
    "a_copied_device_is_a_new_device": (
        "a known device is proven by its key: a copied device id or proof is a new device"
    ),
    "payment_code_dies_with_the_owners_reset": (
        "whatever a session created dies with it: a payment code dies with the owner's reset"
    ),
}


def current_commit() -> str:
    """The commit the drill ran on (with ``+changes`` when the tree differs), or ''."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}+changes" if dirty else head


def control_of(check_name: str) -> str:
    return CONTROLS[check_name.split(":", 1)[0]]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    control: str  # the control the check proves
    failure: str = ""  # what broke, in words: only when the check failed


@dataclass
class DrillReport:
    size: DrillSize
    phases: list[Phase] = field(default_factory=list)
    switch_flips: list[SwitchFlip] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"the drill made no check named {name!r}")

    started_at: str = ""  # ISO 8601, UTC
    commit: str = ""

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    @property
    def verdict(self) -> str:
        """PASSED when every check held (and there were checks), else FAILED."""
        return "PASSED" if self.checks and not self.failures else "FAILED"

    def to_json(self) -> str:
        body = asdict(self)
        summary = {
            "verdict": self.verdict,
            "date": self.started_at,
            "commit": self.commit,
            "checks_held": sum(check.passed for check in self.checks),
            "checks_made": len(self.checks),
        }
        return json.dumps({**summary, **body}, ensure_ascii=False, indent=2)

    def timeline(self) -> str:
        """The report as a person reads it."""
        size = self.size
        lines = [
            f"Incident drill {self.verdict}: {self.started_at or 'not started'},"
            f" commit {self.commit or 'unknown'}",
            f"{size.people} people, {size.attack_pairs} leaked pairs, "
            f"{size.attacker_ips + size.noisy_ips} attacker IPs in the replay "
            f"({size.attacker_ips} spread thin, {size.noisy_ips} noisy) "
            f"({self.seconds:.0f} s)",
        ]
        leak = next((phase for phase in self.phases if phase.name == "leak"), None)
        if leak is not None:
            lines.append(
                f"Bottom line: {leak.counts.get('passwords_found', 0)} right passwords in the "
                f"list, {leak.counts.get('group_id_takeovers', 0)} group IDs reached (through "
                f"the victims' own inboxes), {leak.counts.get('wallet_takeovers', 0)} wallets "
                f"taken over, {leak.counts.get('yen_moved_by_attacker', 0):,} yen lost"
            )
        lines.append("")
        for phase in self.phases:
            lines.append(f"[+{phase.started_at:6.1f} s] {phase.title}  ({phase.seconds:.1f} s)")
            for name, value in phase.counts.items():
                lines.append(f"      {name.replace('_', ' '):<44} {value:>10,}")
            lines.extend(f"      - {note}" for note in phase.notes)
            if phase.name == "response":
                for flip in self.switch_flips:
                    took = flip.effective_after_seconds
                    after = (
                        f"effective after {took:.2f} s "
                        f"({'within' if took <= SWITCH_PROMISE_SECONDS else 'beyond'} the "
                        f"{SWITCH_PROMISE_SECONDS:.0f} s promised)"
                        if took is not None
                        else "NOT APPLIED"
                    )
                    lines.append(f"      switch {flip.switch:<32} {after}  ({flip.probe})")
            lines.append("")
        passed = sum(check.passed for check in self.checks)
        lines.append(f"Checks: {passed} of {len(self.checks)} held")
        for check in self.checks:
            mark = "ok  " if check.passed else "FAIL"
            lines.append(f"  {mark} {check.name} ({check.control}): {check.detail}")
            if not check.passed:
                lines.append(f"       {check.failure}")
        lines.append(f"Verdict: {self.verdict}")
        return "\n".join(lines)


class Timeline:
    def __init__(self, report: DrillReport, progress: Callable[[str], None]) -> None:
        self.report = report
        self.progress = progress
        self.origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.origin

    @contextlib.asynccontextmanager
    async def phase(self, name: str, title: str) -> AsyncIterator[Phase]:
        phase = Phase(name=name, title=title, started_at=round(self.now(), 2))
        self.report.phases.append(phase)
        self.progress(f"[+{phase.started_at:6.1f} s] {title} ...")
        begun = time.monotonic()
        try:
            yield phase
        finally:
            phase.seconds = round(time.monotonic() - begun, 2)
