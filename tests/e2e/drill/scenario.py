"""The incident drill: the 2019 attack and the response to it, replayed end to end.

One scenario, parametrised by size, plays the story of ``docs/incident.md`` against the
four services running as separate processes (``LocalStack``, exactly what
`make run` starts), through the public gRPC contracts only, as the ``gateway``
(people and the attacker's app), ``pos`` (store registers) and ``operator``
principals, and through the mailbox of the local SMTP server:

1. Launch: people register, verify their email, enrol passkeys or an
   authenticator app, open wallets, register cards and top up; some only ever
   use a password (a few of them also sign in with an external ID). A chain
   merchant registers its stores.
2. The leak: an attacker first checks, one at a time, the pairs another breach
   confirmed, then floods the rest of a list of email/password pairs from many
   foreign and domestic IPs and fresh devices, then tries everything on each
   account where the password worked. Some victims also reused the password at
   their mail provider, so for them the attacker reads the registered inbox too.
   Meanwhile every legitimate person signs in and pays.
3. Detection and response: risk raises the stuffing alert by itself; an operator
   blocks the attacking countries, suspends card top-ups, sign-ups and
   external-ID sign-in, and each switch is probed until it holds.
4. Victims: a thief holding a fresh payment code from a stolen phone is at a
   register when the owner resets the password, and the capture is refused;
   people report "this wasn't me"; the victim query over the attacker's IPs and
   devices must name exactly the accounts the attacker reached, with the money
   moved; CompensateCase settles it and a re-run pays nothing.
5. Forced reset: every password is reset; each holder gets one notice at the
   registered address; every old session dies.
6. Wind-down: balances are paid out or listed as unclaimed; Reconcile balances.

``run_drill`` returns a ``DrillReport``: a timeline of phases with counts, the
kill-switch flips with their latency, and every check as (name, passed, detail).
A failed check's message names the control that broke.

Each phase is a mixin on ``DrillBase`` (``base.py``) in a module of its own:
``launch.py`` (1), ``attack.py`` and ``exploit.py`` (2), ``response.py`` (3, 4) and
``recovery.py`` (5, 6); the players and helpers are in ``cast.py``, the report and
its timeline in ``report.py``. This module starts the stack and runs the phases.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from services.devstack.stack import LocalStack
from tests.e2e.drill.attack import Attack
from tests.e2e.drill.cast import PROVIDER
from tests.e2e.drill.launch import Launch
from tests.e2e.drill.recovery import Recovery
from tests.e2e.drill.report import DrillReport, DrillSize, current_commit
from tests.e2e.drill.response import Response
from tests.support.oidc import LocalOidcProvider
from tests.support.people import IDENTITY_ENV


@contextlib.contextmanager
def _own_database() -> Iterator[None]:
    """Ignore DATABASE_URL for the stack: it starts and releases an embedded server."""
    configured = os.environ.pop("DATABASE_URL", None)
    try:
        yield
    finally:
        if configured is not None:
            os.environ["DATABASE_URL"] = configured


class DrillStack(LocalStack):
    """``LocalStack`` on a PostgreSQL of its own, always: the drill plays a launch from
    an empty system and ends in wind-down, so it must never share databases with
    `make run`, an earlier drill or a server named by DATABASE_URL."""

    async def start(self) -> None:
        with _own_database():
            try:
                await super().start()
            except RuntimeError:
                # Free ports are picked before the services bind them, and on a shared
                # machine another process may take one first: once more, on new ports.
                await super().stop()
                self.processes.clear()
                await super().start()

    async def stop(self) -> None:
        with _own_database():
            await super().stop()


def drill_environment(provider: LocalOidcProvider, log_level: str = "warning") -> dict[str, str]:
    return {
        **IDENTITY_ENV,
        "IDENTITY_OIDC_PROVIDERS": provider.config(PROVIDER),
        # Alerts evaluated every second, so detection shows within the short wave.
        "RISK_ALERT_INTERVAL_SECONDS": "1",
        # A launch day and an attack wave squeezed into a minute on a shared
        # 2-core machine: risk answers slower than in production, and the drill
        # is about the controls, not the risk-unavailable fallbacks (tested apart).
        "IDENTITY_RISK_TIMEOUT_SECONDS": "3",
        "WALLET_RISK_TIMEOUT_SECONDS": "3",
        # Likewise the hashing budget: every replayed pair waits for its hash however
        # slowly the machine hashes, so the drill sees what the list would find (the
        # budget's refusals under a flood are tested apart).
        "IDENTITY_HASH_WAIT_SECONDS": "60",
        "LOG_LEVEL": log_level,
    }


@contextlib.asynccontextmanager
async def drill_stack(
    var_dir: Path, *, log_level: str = "warning", extra_env: dict[str, str] | None = None
) -> AsyncIterator[tuple[DrillStack, LocalOidcProvider]]:
    """The four services, SMTP, the card sandbox and a LINE-like ID provider; the
    services log at ``log_level`` into ``var_dir/logs``."""
    provider = LocalOidcProvider()
    await provider.start()
    stack = DrillStack(
        var_dir=var_dir,
        log_dir=var_dir / "logs",
        extra_env={**drill_environment(provider, log_level), **(extra_env or {})},
    )
    try:
        async with stack:
            yield stack, provider
    finally:
        await provider.stop()


class Drill(Launch, Attack, Response, Recovery):
    """The whole story, phase after phase."""

    async def run(self) -> DrillReport:
        started = time.monotonic()
        self.report.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.report.commit = current_commit()
        try:
            await self.launch()
            await self.leak()
            await self.response()
            await self.victims()
            await self.forced_reset()
            await self.wind_down()
            await self.audit()
        finally:
            self.report.seconds = round(time.monotonic() - started, 1)
            await self.close()
        return self.report


async def run_drill(
    stack: LocalStack,
    provider: LocalOidcProvider,
    size: DrillSize,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> DrillReport:
    """Play the whole story against a running stack and report what each control did."""
    return await Drill(stack, provider, size, progress).run()
