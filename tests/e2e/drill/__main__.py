"""`make drill`: the incident drill at a larger size, told as a timeline.

    python -m tests.e2e.drill [--people N] [--pairs N] [--seed N]

Starts PostgreSQL, SMTP, the card sandbox and the four services under
var/drill/stack (wiped first: the drill plays a launch from an empty system),
plays the whole story, prints what the attacker tried and what each control
did, and writes var/drill/report.json. Exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

from tests.e2e.drill.report import DrillSize
from tests.e2e.drill.scenario import drill_stack, run_drill

VAR = Path("var") / "drill"

# Large enough for the alert rules as shipped (1,000 failed sign-ins, 500 foreign
# attempts in five minutes) to fire without tuning.
LARGER = DrillSize(
    people=160,
    stores=20,
    attack_pairs=1_500,
    reused_pairs=24,
    mailbox_compromised=4,
    attacker_ips=160,
    noisy_ips=4,
    noisy_attempts=40,
    reporters=5,
    attack_concurrency=24,
    stuffing_alert_failures=None,
    stuffing_alert_rate=None,
    foreign_alert_attempts=None,
)


def _size(arguments: argparse.Namespace) -> DrillSize:
    size = LARGER
    changes: dict[str, int] = {}
    if arguments.people is not None:
        changes["people"] = arguments.people
    if arguments.pairs is not None:
        changes["attack_pairs"] = arguments.pairs
    if arguments.seed is not None:
        changes["seed"] = arguments.seed
    return DrillSize(**{**size.__dict__, **changes})


async def _main(size: DrillSize) -> int:
    stack_dir = VAR / "stack"
    shutil.rmtree(stack_dir, ignore_errors=True)
    VAR.mkdir(parents=True, exist_ok=True)
    print("Starting PostgreSQL, SMTP, the card sandbox and the four services...", flush=True)
    # Info level: the services' logs under var/drill/stack/logs tell the story afterwards.
    async with drill_stack(stack_dir, log_level="info") as (stack, provider):
        report = await run_drill(
            stack, provider, size, progress=lambda line: print(line, flush=True)
        )
    (VAR / "report.json").write_text(report.to_json() + "\n")
    print()
    print(report.timeline())
    print(f"\nReport: {VAR / 'report.json'}; service logs: {stack_dir / 'logs'}")
    print(f"Verdict: {report.verdict}")
    return 1 if report.failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, help=f"people (default {LARGER.people})")
    parser.add_argument("--pairs", type=int, help=f"leaked pairs (default {LARGER.attack_pairs})")
    parser.add_argument("--seed", type=int, help="seed of the story's random choices")
    sys.exit(asyncio.run(_main(_size(parser.parse_args()))))


if __name__ == "__main__":
    main()
