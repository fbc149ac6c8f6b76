"""`make run`: the whole system on this machine until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from services.devstack.gateway import curl_session, seed_demo, start_gateway
from services.devstack.stack import LocalStack

VAR = Path("var")


def _banner(stack: LocalStack) -> str:
    assert stack.smtp is not None
    lines = ["", "Mamoru is running.", ""]
    lines.append(f"  {'service':<9} {'gRPC (mTLS)':<18} health (plaintext)")
    for proc in stack.processes.values():
        lines.append(f"  {proc.name:<9} {proc.address:<18} 127.0.0.1:{proc.health_port}")
    lines += [
        "",
        f"  SMTP (keeps every message)  127.0.0.1:{stack.smtp.port}  -> {VAR / 'mail'}",
        f"  sandbox card processor      {stack.card_processor.url if stack.card_processor else ''}",
        f"  sandbox points program      {stack.points_program.url if stack.points_program else ''}",
        f"  PostgreSQL                  {stack.server_url}",
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
    stack = LocalStack(var_dir=VAR, fixed_ports=True, log_dir=VAR / "logs")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("Starting PostgreSQL, SMTP and the four services...", flush=True)
    async with stack:
        print("Starting the partner gateway and its sandbox...", flush=True)
        demo = await seed_demo(stack, await start_gateway(stack))
        print(_banner(stack), flush=True)
        print(curl_session(demo), flush=True)
        await stop.wait()
        print("\nStopping...", flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
