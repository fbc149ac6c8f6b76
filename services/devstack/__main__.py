"""`make run`: the whole system on this machine until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from services.devstack.stack import LocalStack

VAR = Path("var")


def _banner(stack: LocalStack) -> str:
    assert stack.smtp is not None
    lines = ["", "Mamoru is running.", ""]
    lines.append(f"  {'service':<11} {'gRPC (mTLS)':<18} {'health (plaintext)':<20} metrics")
    for proc in stack.processes.values():
        lines.append(
            f"  {proc.key:<11} {proc.address:<18} {'127.0.0.1:' + str(proc.health_port):<20}"
            f" http://127.0.0.1:{proc.metrics_port}/metrics"
        )
    lines += [
        "",
        f"  SMTP (keeps every message)  127.0.0.1:{stack.smtp.port}  -> {VAR / 'mail'}",
        f"  sandbox card processor      {stack.card_processor.url if stack.card_processor else ''}",
        f"  sandbox points program      {stack.points_program.url if stack.points_program else ''}",
        f"  PostgreSQL                  {stack.server_url}",
        *(
            [f"  PgBouncer (transaction)     127.0.0.1:{stack.bouncer.port}"]
            if stack.bouncer is not None
            else []
        ),
        f"  certificates                {stack.tls_dir}  (clients: operator, gateway, pos)",
        f"  service logs                {VAR / 'logs'}",
        "",
        "Try (in another terminal):",
        "  .venv/bin/python -m services.devstack.call risk GetPolicies '{}'",
        "  .venv/bin/python -m services.devstack.call identity GetJwks '{}'",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


async def _main() -> None:
    replicas = int(os.environ.get("MAMORU_REPLICAS") or 1)
    if replicas < 1:
        raise SystemExit("REPLICAS must be at least 1")
    stack = LocalStack(var_dir=VAR, fixed_ports=True, log_dir=VAR / "logs", replicas=replicas)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("Starting PostgreSQL, SMTP and the four services...", flush=True)
    async with stack:
        print(_banner(stack), flush=True)
        await stop.wait()
        print("\nStopping...", flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
