"""`make run`'s gateway sandbox: the gateway starts as one more process beside the
four services, a demo partner and person are seeded, and the printed curl session,
run by bash as a developer would paste it, captures the person's payment."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from services.devstack.gateway import curl_session, seed_demo, start_gateway
from services.devstack.stack import LocalStack

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
async def test_the_printed_curl_session_captures_the_demo_persons_payment(
    tmp_path: Path,
) -> None:
    var = tmp_path / "var"
    async with LocalStack(var_dir=var, log_dir=var / "logs") as stack:
        demo = await seed_demo(stack, await start_gateway(stack))
        session = curl_session(demo).split("Partner quickstart (paste into another terminal):")[1]
        script = session.replace(
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
        payment = json.loads(out)
        assert payment["status"] == "captured", payment
        assert payment["amount"] == {"amount_minor": 480, "currency": "JPY"}
        assert payment["store_id"] == demo["store_ids"][0]

        # A second `make run` on the same var/ keeps the same partner.
        again = await seed_demo(stack, demo["url"])
        assert again["client_id"] == demo["client_id"]
