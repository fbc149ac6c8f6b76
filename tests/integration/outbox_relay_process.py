"""An outbox relay in its own process, so a test can SIGKILL it mid-delivery.

Usage: python outbox_relay_process.py DATABASE_URL RECEIVER_URL LEASE_SECONDS

Each message is POSTed as JSON to RECEIVER_URL; SIGTERM stops the relay gracefully.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp

from services.runtime.db import close_pool, create_pool
from services.runtime.outbox import OutboxMessage, OutboxRelay


async def relay_until_terminated(database_url: str, receiver_url: str, lease: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    pool = await create_pool(database_url, max_size=3, application_name="outbox-relay-test")
    try:
        async with aiohttp.ClientSession() as http:

            async def post(message: OutboxMessage) -> None:
                body = {
                    "topic": message.topic,
                    "idempotency_key": message.idempotency_key,
                    "payload": message.payload,
                }
                async with http.post(receiver_url, json=body) as response:
                    response.raise_for_status()

            relay = OutboxRelay(
                pool,
                post,
                lease_seconds=lease,
                delivery_timeout_seconds=lease * 0.9,
                poll_interval_seconds=0.2,
            )
            await relay.run(stop)
    finally:
        await close_pool(pool)


if __name__ == "__main__":
    asyncio.run(relay_until_terminated(sys.argv[1], sys.argv[2], float(sys.argv[3])))
