"""Starting before what a service needs is an ordinary moment, logged as such: a
follower waiting for its peer writes one short line per outage (not a multi-line
error per retry), and a service whose database is unreachable or not created yet
waits for it, NOT_SERVING, with one clear line per attempt that names the database
but never its password."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import Cluster
from tests.support.db_proxy import DatabaseProxy

DEADLINE_SECONDS = 60.0
# How long the peer stays away: several retry rounds of a follower that logs per retry.
OUTAGE_SECONDS = 6.0


class Records:
    """Every line the services in this process wrote, read back from standard output
    as an operator's log collector reads it (the cluster logs JSON)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self._events: list[dict[str, Any]] = []

    @property
    def events(self) -> list[dict[str, Any]]:
        for line in self._capsys.readouterr().out.splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    self._events.append(event)
        return self._events

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [event for event in self.events if predicate(event)]


@pytest.fixture
def records(capsys: pytest.CaptureFixture[str]) -> Iterator[Records]:
    root = logging.getLogger()
    # A test may start services at a lower level; later ones should not inherit it.
    level = root.level
    try:
        yield Records(capsys)
    finally:
        root.setLevel(level)


async def _until(check: Callable[[], Any], what: str) -> None:
    give_up = time.monotonic() + DEADLINE_SECONDS
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > give_up:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.05)


def _one_line(event: dict[str, Any]) -> bool:
    return "exception" not in event and not any(
        isinstance(value, str) and "\n" in value for value in event.values()
    )


async def test_a_follower_waiting_for_its_peer_logs_one_short_line_per_outage(
    cluster: Cluster, records: Records
):
    def about_revocations(event: dict[str, Any]) -> bool:
        return str(event.get("event", "")).startswith("revocations.") and event["level"] in (
            "warning",
            "error",
        )

    def back_with_identity(event: dict[str, Any]) -> bool:
        return event.get("event") == "revocations.reconnected" and event["peer"] == "identity"

    # Info level for every service in this process: the end of the outage is an info line.
    verbose = {"LOG_LEVEL": "info"}
    await cluster.start("risk", "wallet", env=verbose)  # identity is not there yet
    await _until(lambda: records.matching(about_revocations), "the wallet says it waits")
    # The outage goes on; a follower that logged per retry would write line after line.
    await asyncio.sleep(OUTAGE_SECONDS)
    await cluster.start("identity", env=verbose)
    await _until(
        lambda: records.matching(back_with_identity), "the wallet follows identity's revocations"
    )

    lines = records.matching(about_revocations)
    assert len(lines) == 1, lines
    assert _one_line(lines[0]), lines[0]
    assert lines[0]["peer"] == "identity"


def _with_password(url: str) -> tuple[str, str]:
    """``url`` carrying a password (the embedded server trusts local connections and
    ignores it), and that password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return url, parts.password
    password = "never-in-a-log-7f3a"
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or 'postgres'}:{password}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), password


async def _health(port: int) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
        return reply.status


async def test_a_service_waits_for_a_missing_or_unreachable_database_and_says_which(
    cluster: Cluster, records: Records, pg_server_url: str
):
    # Risk's database does not exist yet, and the relay to the server is down.
    database = f"risk_late_{int(time.time() * 1000) % 10**9}"
    proxy = DatabaseProxy(
        urllib.parse.urlunsplit(urllib.parse.urlsplit(pg_server_url)._replace(path=f"/{database}"))
    )
    url, password = _with_password(proxy.url)
    cluster.database_urls["risk"] = url
    health_port = cluster.ports["risk"][1]

    def attempts() -> list[dict[str, Any]]:
        return records.matching(lambda event: event.get("event") == "database.unavailable")

    starting = asyncio.create_task(cluster.start("risk"))
    try:
        await _until(lambda: len(attempts()) >= 2, "two attempts while the server is unreachable")
        assert await _health(health_port) == health_pb2.HealthCheckResponse.NOT_SERVING
        await proxy.start()
        await _until(
            lambda: any("does not exist" in e["reason"] for e in attempts()),
            "an attempt that reaches the server and finds no database",
        )
        assert await _health(health_port) == health_pb2.HealthCheckResponse.NOT_SERVING
        admin = await asyncpg.connect(pg_server_url)
        try:
            await admin.execute(f'create database "{database}"')
        finally:
            await admin.close()
        await asyncio.wait_for(starting, DEADLINE_SECONDS)
        assert await _health(health_port) == health_pb2.HealthCheckResponse.SERVING
    finally:
        if not starting.done():
            starting.cancel()
        await cluster.stop("risk")
        await proxy.close()
        admin = await asyncpg.connect(pg_server_url)
        try:
            await admin.execute(f'drop database if exists "{database}" with (force)')
        finally:
            await admin.close()

    lines = attempts()
    assert [line["attempt"] for line in lines] == list(range(1, len(lines) + 1))
    for line in lines:
        assert _one_line(line), line
        assert line["database"] == f"127.0.0.1:{proxy.port}/{database}"
        assert line["level"] == "warning"
    everything = repr(records.events)
    assert password not in everything
