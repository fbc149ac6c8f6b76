"""`make run`: the whole system on this machine until Ctrl-C.

Ports come from the same variables the services read (IDENTITY_GRPC_PORT,
SMTP_PORT, ...), with the documented defaults; MAMORU_VAR (default var) is the
folder for the database, certificates, mail, logs and the demo.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import httpx
import uvloop

from services.devstack import demo
from services.devstack.console import ConsoleLogin, start_console
from services.devstack.gateway import Sandbox, curl_session, seed_partner, start_gateway
from services.devstack.stack import LocalStack
from services.devstack.supervisor import supervise
from services.devstack.web import pages_env, start_web, web_http_port
from services.gateway.domain.errors import Refusal


def _say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def _banner(stack: LocalStack, var: Path, console: ConsoleLogin | None = None) -> str:
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
        f"  SMTP (keeps every message)  127.0.0.1:{stack.smtp.port}  -> {var / 'mail'}"
        "  (read it: .venv/bin/mamoru mail)",
        f"  sandbox card processor      {stack.card_processor.url if stack.card_processor else ''}",
        f"  sandbox points program      {stack.points_program.url if stack.points_program else ''}",
        f"  PostgreSQL                  {stack.server_url}",
        *(
            [f"  PgBouncer (transaction)     127.0.0.1:{stack.bouncer.port}"]
            if stack.bouncer is not None
            else []
        ),
        *(
            [
                f"  operators' console          {console.url}  (sign in as {console.name},"
                f" password {console.password}; kept in {var / 'console-operator.json'})"
            ]
            if console is not None
            else []
        ),
        f"  certificates                {stack.tls_dir}  (clients: operator, gateway, pos, web)",
        f"  service logs                {var / 'logs'}",
        "",
        "Try (in another terminal):",
        "  .venv/bin/python -m services.devstack.call --help",
        "  .venv/bin/python -m services.devstack.call risk GetPolicies '{}'",
        "  .venv/bin/mamoru mail",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


async def _seed_demo(stack: LocalStack, var: Path) -> demo.Demo | None:
    if demo.Demo.load(var) is None:
        _say("Seeding the demo (a person with a funded wallet, a merchant with stores)...")
    try:
        seeded, now = await demo.seed_stack(stack)
    except (grpc.aio.AioRpcError, RuntimeError, TimeoutError) as error:
        _say(
            f"The demo could not be seeded ({_reason(error)}); everything else runs."
            " `make clean && make run` seeds it afresh."
        )
        return None
    _say("Demo seeded." if now else "Demo already seeded on an earlier start; kept as it is.")
    print(
        demo.usage(
            seeded,
            identity=stack.processes["identity"].address,
            wallet=stack.processes["wallet"].address,
        ),
        flush=True,
    )
    return seeded


async def _seed_partner(stack: LocalStack, seeded: demo.Demo | None) -> Sandbox | None:
    url = await start_gateway(stack)
    if seeded is None:
        _say("No partner quickstart: its partner acts for the demo merchant, which is missing.")
        return None
    try:
        return await seed_partner(stack, url, seeded)
    except (httpx.HTTPError, ValueError, LookupError, Refusal) as error:
        _say(f"The partner sandbox could not be seeded ({_reason(error)}); the gateway runs.")
        return None


async def _start_console(stack: LocalStack) -> ConsoleLogin | None:
    try:
        return await start_console(stack)
    except (RuntimeError, TimeoutError, OSError) as error:
        _say(f"The operators' console did not start ({_reason(error)}); everything else runs.")
        return None


def _reason(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error) or type(error).__name__


async def _main() -> None:
    var = Path(os.environ.get("MAMORU_VAR", "var"))
    replicas = int(os.environ.get("MAMORU_REPLICAS") or 1)
    if replicas < 1:
        raise SystemExit("REPLICAS must be at least 1")
    web_port = web_http_port(fixed=True)
    stack = LocalStack(
        var_dir=var,
        fixed_ports=True,
        log_dir=var / "logs",
        replicas=replicas,
        extra_env=pages_env(web_port),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _say("Starting PostgreSQL, SMTP, the sandboxes and the four services...")
    async with stack:
        seeded = await _seed_demo(stack, var)
        _say("Starting the partner gateway and its sandbox...")
        sandbox = await _seed_partner(stack, seeded)
        _say("Starting the web wallet...")
        pages = await start_web(stack, web_port)
        _say("Starting the operators' console...")
        console = await _start_console(stack)
        print(_banner(stack, var, console), flush=True)
        print(f"\nThe web wallet: open {pages} in a browser.\n", flush=True)
        if sandbox is not None:
            print(curl_session(sandbox), flush=True)
        watcher = asyncio.create_task(supervise(stack, _say))
        await stop.wait()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        print("\nStopping...", flush=True)


if __name__ == "__main__":
    # uvloop, the loop every service runs on, also for the stand-ins served here.
    uvloop.run(_main())
