"""Keep `make run`'s services up: a service that exits is reported and started again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.devstack.stack import LocalStack

POLL_SECONDS = 0.5
# Waits between restart attempts of a service that keeps failing to start.
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


async def supervise(stack: LocalStack, say: Callable[[str], None]) -> None:
    """Watch every service of ``stack`` until cancelled; restart the ones that exit.

    Runs beside the stack and must be cancelled before ``stack.stop()``, whose
    SIGTERMs would otherwise look like crashes.
    """
    while True:
        for name, proc in list(stack.processes.items()):
            process = proc.process
            if process is None or process.returncode is None:
                continue
            log = f" (see {stack.log_dir / (name + '.log')})" if stack.log_dir else ""
            say(f"{name} exited with code {process.returncode}{log}; restarting it")
            await _restart(stack, name, say)
        await asyncio.sleep(POLL_SECONDS)


async def _restart(stack: LocalStack, name: str, say: Callable[[str], None]) -> None:
    for attempt, pause in enumerate((0.0, *BACKOFF_SECONDS)):
        await asyncio.sleep(pause)
        try:
            await stack.restart_service(name)
        except (RuntimeError, TimeoutError) as error:
            say(f"{name} did not come back (attempt {attempt + 1}): {error or 'timed out'}")
            continue
        pid = stack.processes[name].process
        say(f"{name} is serving again (pid {pid.pid if pid else '?'})")
        return
    say(f"{name} gave up after {len(BACKOFF_SECONDS) + 1} attempts; the stack runs without it")
    # Leave it down rather than loop forever on a service that cannot start.
    stack.processes[name].process = None
