"""Schemathesis drives the whole partner API from its own OpenAPI document against
the running gateway: no answer is a 5xx, and every answer matches the document
(status, content type, body schema)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.e2e.gateway.conftest import Gateway

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)
# Bounded so the run takes a minute or two on a busy machine, never open-ended.
EXAMPLES_PER_OPERATION = 12
WITHIN_SECONDS = 240.0


@pytest.mark.slow
async def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(
    gateway: Gateway, tmp_path: Path
) -> None:
    client_id, secret = await gateway.partner(requests_per_minute=100_000)
    token = await gateway.token(client_id, secret)
    schemathesis = Path(sys.executable).with_name("st")
    process = await asyncio.create_subprocess_exec(
        str(schemathesis),
        "run",
        f"{gateway.url}/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "2",
        "--request-timeout",
        "20",
        "--seed",
        "20261128",
        "--generation-database",
        "none",
        "--no-color",
        "--report-dir",
        str(tmp_path / "report"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    try:
        async with asyncio.timeout(WITHIN_SECONDS):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
