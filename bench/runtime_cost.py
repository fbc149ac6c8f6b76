"""CPU per RPC of the shared runtime layers, one layer added at a time.

``python -m bench.runtime_cost`` starts, for each variant, a server process built
from ``services.runtime.server.rpc_interceptors`` (the same list a service's mTLS
port uses: tracing, the RPC log line, request decoding, metrics, access, error
mapping) around one trivial unary RPC, on an mTLS port with the local PKI, and
calls it from this process. The figure is the server process's CPU time (user +
system, from the kernel) over the measured calls divided by their number: on a
busy machine latency swings, CPU per call does not.

The last variant adds one pool acquisition and release per call against a real
PostgreSQL (embedded, as ``make run`` uses), to show what the pool itself costs.

The server runs on uvloop, as every service does. Settings come from the
environment as a service reads them (``LOG_LEVEL``,
``TRACE_SAMPLE_RATIO``...), so the figures are those of a service started the
same way; logs go to /dev/null in JSON, as off a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
import psutil
import uvloop

SERVICE = "mamoru.bench.v1.RuntimeCost"
METHOD = f"/{SERVICE}/Ping"
POOLED_METHOD = f"/{SERVICE}/PingPool"
LAYERS = ("tracing", "logging", "decoding", "metrics", "access", "errors")
PRINCIPALS = ("bench", "operator")
DEFAULT_PG_DIR = Path("var/bench/postgres")


def _variants() -> list[tuple[str, int, bool]]:
    """(label, how many layers from the outside, pool acquisition per call)."""
    steps = [("bare mTLS", 0, False)]
    steps += [(f"+ {layer}", index + 1, False) for index, layer in enumerate(LAYERS)]
    steps.append(("full + pool acquire/release", len(LAYERS), True))
    return steps


async def _serve(tls_dir: Path, layers: int, database_url: str) -> None:
    from services.runtime import metrics, tracing
    from services.runtime.access import allow
    from services.runtime.config import ServiceSettings, load_settings
    from services.runtime.db import close_pool, create_pool
    from services.runtime.logging import configure_logging
    from services.runtime.server import rpc_interceptors
    from services.runtime.tls import load_tls, server_credentials

    environment = {**os.environ, "DATABASE_URL": database_url or "postgresql://unused/x"}
    settings = load_settings(ServiceSettings, environment)
    sink = open(os.devnull, "w")  # noqa: ASYNC230, SIM115 - at start-up, kept open
    configure_logging("bench", fmt="json", level=settings.log_level, stream=sink)
    tracing.configure_tracing(
        "bench", settings.otlp_endpoint, sample_ratio=settings.trace_sample_ratio
    )
    service_metrics = metrics.for_service("bench")
    pool = await create_pool(database_url, max_size=4) if database_url else None

    async def ping(request: bytes, context: Any) -> bytes:
        return request

    async def ping_pool(request: bytes, context: Any) -> bytes:
        assert pool is not None
        async with pool.acquire():
            pass
        return request

    access = {METHOD: allow("operator"), POOLED_METHOD: allow("operator")}
    interceptors = rpc_interceptors(service_metrics, access, None)[:layers]
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Ping": grpc.unary_unary_rpc_method_handler(ping),
                    "PingPool": grpc.unary_unary_rpc_method_handler(ping_pool),
                },
            ),
        )
    )
    port = server.add_secure_port("127.0.0.1:0", server_credentials(load_tls(tls_dir, "bench")))
    await server.start()
    print(port, flush=True)
    # Runs until the bench ends it; stdin closing means the bench has gone.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)
    if pool is not None:
        await close_pool(pool)


async def _measure(
    tls_dir: Path,
    layers: int,
    pooled: bool,
    database_url: str,
    calls: int,
    concurrency: int,
    profile: Path | None = None,
) -> float:
    from services.runtime.tls import load_tls, secure_channel

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.runtime_cost",
        "--serve",
        str(layers),
        "--tls-dir",
        str(tls_dir),
        "--database-url",
        database_url if pooled else "",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        port = int((await child.stdout.readline()).decode())
        server = psutil.Process(child.pid)
        channel = secure_channel(
            f"127.0.0.1:{port}", load_tls(tls_dir, "operator"), server_name="bench"
        )
        call = channel.unary_unary(POOLED_METHOD if pooled else METHOD)

        async def worker(count: int) -> None:
            for _ in range(count):
                await call(b"ping", timeout=30)

        async def run(total: int) -> None:
            share, extra = divmod(total, concurrency)
            await asyncio.gather(
                *(worker(share + (1 if i < extra else 0)) for i in range(concurrency))
            )

        await run(max(calls // 5, 50))  # warm up: connection, caches, first-use paths
        spy = await _start_py_spy(child.pid, profile) if profile is not None else None
        before = server.cpu_times()
        await run(calls)
        after = server.cpu_times()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            await spy.wait()
        await channel.close()
        used = (after.user - before.user) + (after.system - before.system)
        return float(used / calls * 1e6)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), timeout=30)
        except TimeoutError:
            child.kill()
            await child.wait()


async def _start_py_spy(pid: int, output: Path) -> asyncio.subprocess.Process:
    from bench.profile import py_spy

    binary = py_spy()
    if binary is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    output.parent.mkdir(parents=True, exist_ok=True)
    spy = await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "250",
        "--format",
        "raw",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # py-spy attaches before the measured calls start
    return spy


async def _database_url(pg_dir: Path) -> str:
    from services.devstack import devdb

    server_url = await asyncio.to_thread(devdb.server_url, pg_dir)
    return await devdb.ensure_database(server_url, "mamoru_bench")


async def _main(args: argparse.Namespace) -> None:
    from services.devstack.pki import ensure_local_pki

    tls_dir = Path(args.tls_dir or tempfile.mkdtemp(prefix="mamoru-bench-tls-"))
    ensure_local_pki(tls_dir, PRINCIPALS)
    database_url = await _database_url(Path(args.pg_dir)) if not args.no_pool else ""
    print(
        f"server CPU per call, {args.calls} calls, {args.concurrency} concurrent, "
        f"LOG_LEVEL={os.environ.get('LOG_LEVEL', 'info')} "
        f"TRACE_SAMPLE_RATIO={os.environ.get('TRACE_SAMPLE_RATIO', '(default)')}"
    )
    previous = 0.0
    for label, layers, pooled in _variants():
        if pooled and not database_url:
            continue
        profile = None
        if args.profile and layers == len(LAYERS):
            profile = Path(args.profile) / ("pool.txt" if pooled else "full.txt")
        figures = [
            await _measure(
                tls_dir, layers, pooled, database_url, args.calls, args.concurrency, profile
            )
            for _ in range(args.repeat)
        ]
        cost = min(figures)
        print(f"  {label:<30} {cost:8.0f} us/call  (layer {cost - previous:+6.0f} us)", flush=True)
        previous = cost


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.runtime_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per variant")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; least is shown")
    parser.add_argument("--no-pool", action="store_true", help="skip the PostgreSQL variant")
    parser.add_argument("--pg-dir", default=str(DEFAULT_PG_DIR), help="embedded PostgreSQL data")
    parser.add_argument(
        "--profile", default="", help="folder for py-spy profiles of the full variants"
    )
    parser.add_argument("--tls-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve >= 0:
        # On uvloop, the event loop every service runs on.
        uvloop.run(_serve(Path(args.tls_dir), args.serve, args.database_url))
    else:
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
