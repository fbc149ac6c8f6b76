"""pgbench's TPC-B-like run on the same PostgreSQL server the services use, in the
same run, so payments per second can be read as a share of what the database
alone does on this machine."""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.parse
from typing import Any

import asyncpg

from services.devstack import devdb

DATABASE = "bench_pgbench"
_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")
_LATENCY = re.compile(r"latency average = ([0-9.]+) ms")


def _environment(server_url: str) -> dict[str, str]:
    """libpq variables for the server behind ``server_url`` (a unix socket when embedded)."""
    parts = urllib.parse.urlsplit(server_url)
    query = urllib.parse.parse_qs(parts.query)
    env = dict(os.environ)
    host = query.get("host", [parts.hostname or ""])[0]
    if host:
        env["PGHOST"] = host
    if parts.port:
        env["PGPORT"] = str(parts.port)
    if parts.username:
        env["PGUSER"] = urllib.parse.unquote(parts.username)
    if parts.password:
        env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
    env["PGDATABASE"] = DATABASE
    return env


async def _fresh_database(server_url: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        # A constant name; CREATE/DROP DATABASE take no bound parameters.
        await conn.execute(f'drop database if exists "{DATABASE}" with (force)')
    finally:
        await conn.close()
    await devdb.ensure_database(server_url, DATABASE)


async def _run(args: list[str], env: dict[str, str], *, echo: bool) -> str:
    program = str(devdb.pg_bin_dir() / "pgbench")
    process = await asyncio.create_subprocess_exec(
        program,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines = []
    async for raw in process.stdout:
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        if echo and line.startswith("progress:"):
            print(f"    pgbench {line}", flush=True)
    if await process.wait() != 0:
        raise RuntimeError("pgbench failed:\n" + "\n".join(lines[-20:]))
    return "\n".join(lines)


async def run_pgbench(server_url: str, *, scale: int, clients: int, seconds: int) -> dict[str, Any]:
    """``pgbench -i -s scale`` into a fresh database, then a timed TPC-B-like run."""
    env = _environment(server_url)
    await _fresh_database(server_url)
    started = time.monotonic()
    await _run(["-i", "-q", "-s", str(scale)], env, echo=False)
    print(
        f"    pgbench: initialised scale {scale} in {time.monotonic() - started:.0f}s", flush=True
    )
    output = await _run(
        ["-c", str(clients), "-j", str(clients), "-T", str(seconds), "-P", "5"], env, echo=True
    )
    tps = _TPS.search(output)
    latency = _LATENCY.search(output)
    if tps is None:
        raise RuntimeError("pgbench printed no tps:\n" + output[-2000:])
    conn = await asyncpg.connect(server_url)
    try:
        settings = {
            name: await conn.fetchval("select current_setting($1)", name)
            for name in ("fsync", "synchronous_commit", "shared_buffers", "max_connections")
        }
        await conn.execute(f'drop database if exists "{DATABASE}" with (force)')
    finally:
        await conn.close()
    return {
        "tps": float(tps.group(1)),
        "latency_average_ms": float(latency.group(1)) if latency else None,
        "clients": clients,
        "seconds": seconds,
        "scale": scale,
        "server_settings": settings,
    }
