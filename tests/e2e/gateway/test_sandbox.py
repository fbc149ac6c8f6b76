"""`make run`'s gateway sandbox: the gateway starts as one more process beside the
four services, the demo merchant's stores are registered with it and a demo
partner is granted them, and the printed curl session, run by bash as a developer
would paste it, captures a payment from the demo person's phone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from services.devstack import demo, devdb
from services.devstack.gateway import (
    SANDBOX_FILE,
    Sandbox,
    curl_session,
    seed_partner,
    start_gateway,
)
from services.devstack.stack import LocalStack

REPO = Path(__file__).resolve().parents[3]


async def _paste(session: Sandbox, var: Path) -> dict[str, object]:
    """The printed session, run by bash from the repository as a developer pastes it."""
    script = curl_session(session).split("Partner quickstart (paste into another terminal):")[1]
    script = script.replace(
        "services.devstack.gateway code", f"services.devstack.gateway code --var {var}"
    )
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    payment: dict[str, object] = json.loads(out)
    return payment


async def _gateway_rows(stack: LocalStack) -> dict[str, int]:
    database = await devdb.ensure_database(stack.server_url, "mamoru_gateway")
    conn = await asyncpg.connect(database)
    try:
        return {
            table: int(await conn.fetchval(f"select count(*) from {table}"))  # noqa: S608
            for table in ("partners", "merchants", "stores", "partner_credentials", "admin_log")
        }
    finally:
        await conn.close()


@pytest.mark.slow
async def test_the_printed_curl_session_pays_from_the_demo_phone_on_every_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PostgreSQL of its own under var/, as `make run` has: the demo is seeded once.
    monkeypatch.delenv("DATABASE_URL", raising=False)
    var = tmp_path / "var"
    async with LocalStack(var_dir=var, log_dir=var / "logs") as stack:
        seeded, _ = await demo.seed_stack(stack)
        first = await seed_partner(stack, await start_gateway(stack), seeded)
        # The partner acts for the demo's own merchant and stores, not a second one.
        assert first.store_ids == [store.store_id for store in seeded.merchant.stores]
        kept = json.loads((var / SANDBOX_FILE).read_text())
        assert kept["merchant_id"] == seeded.merchant.merchant_id
        rows = await _gateway_rows(stack)
        assert (rows["partners"], rows["merchants"], rows["stores"]) == (1, 1, 2)

        payment = await _paste(first, var)
        assert payment["status"] == "captured", payment
        assert payment["amount"] == {"amount_minor": 480, "currency": "JPY"}
        assert payment["store_id"] == seeded.merchant.stores[0].store_id

    # The same var/ again, as a second `make run`, with the services on other ports.
    async with LocalStack(var_dir=var, log_dir=var / "logs") as stack:
        again, seeded_now = await demo.seed_stack(stack)
        assert not seeded_now
        second = await seed_partner(stack, await start_gateway(stack), again)
        assert (second.client_id, second.client_secret) == (first.client_id, first.client_secret)
        assert await _gateway_rows(stack) == rows
        payment = await _paste(second, var)
        assert payment["status"] == "captured", payment
