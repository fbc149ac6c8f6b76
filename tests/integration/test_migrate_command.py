"""``python -m services.<name> migrate``, the command a Kubernetes Job runs, as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.runtime.migrations import RUNTIME_MIGRATIONS, read_migrations

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("identity", "wallet", "risk", "notify")


async def run_migrate(service: str, database_url: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run the command with only what a Job gives it; return exit code, JSON lines, stderr."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("IDENTITY_", "WALLET_", "RISK_", "NOTIFY_", "SMTP_"))
    }
    environ.update(DATABASE_URL=database_url, LOG_FORMAT="json")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{service}",
        "migrate",
        cwd=ROOT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
    assert process.returncode is not None
    return process.returncode, lines, stderr.decode()


async def recorded(database_url: str) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("select component, name from schema_migrations")
    finally:
        await conn.close()
    return {(row["component"], row["name"]) for row in rows}


def expected(service: str) -> set[tuple[str, str]]:
    folder = ROOT / "services" / service / "migrations"
    return {("runtime", m.name) for m in read_migrations("runtime", RUNTIME_MIGRATIONS)} | {
        (service, m.name) for m in read_migrations(service, folder)
    }


@pytest.mark.slow
@pytest.mark.parametrize("service", SERVICES)
async def test_migrate_applies_every_migration_of_the_service_and_exits(service, new_database):
    url = await new_database(f"migrate_{service}")

    code, lines, stderr = await run_migrate(service, url)

    assert code == 0, stderr
    assert await recorded(url) == expected(service)
    (done,) = [line for line in lines if line.get("event") == "migrations.applied"]
    assert sorted(done["applied"]) == sorted(f"{c}/{n}" for c, n in expected(service))


@pytest.mark.slow
async def test_migrate_run_again_applies_nothing_and_still_succeeds(new_database):
    url = await new_database("migrate_again")
    first, _, _ = await run_migrate("wallet", url)

    code, lines, stderr = await run_migrate("wallet", url)

    assert (first, code) == (0, 0), stderr
    (done,) = [line for line in lines if line.get("event") == "migrations.applied"]
    assert done["applied"] == []
    assert await recorded(url) == expected("wallet")


async def test_migrate_names_an_unreachable_database_in_one_line_without_its_password():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe socket is closed.
    url = f"postgresql://mamoru:hunter2secret@127.0.0.1:{port}/wallet"

    code, lines, stderr = await run_migrate("wallet", url)

    assert code == 1
    (failure,) = [line for line in lines if line.get("level") == "error"]
    assert failure["event"] == "migrations.database_unreachable"
    assert failure["database"] == f"127.0.0.1:{port}/wallet"
    assert "hunter2secret" not in json.dumps(lines) + stderr
    assert "Traceback" not in stderr


async def test_migrate_refuses_a_database_url_that_is_not_postgresql():
    code, _, stderr = await run_migrate("risk", "mysql://somewhere/risk")

    assert code == 2
    assert "DATABASE_URL must be a postgresql:// URL" in stderr
