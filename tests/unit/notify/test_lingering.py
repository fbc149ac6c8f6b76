"""Notices accepted close together wake the delivery job once, after a short linger."""

from __future__ import annotations

import asyncio

from services.notify.jobs import Lingering


async def test_notices_accepted_together_wake_the_queue_once() -> None:
    woken = asyncio.Event()
    wakes: list[float] = []

    def wake() -> None:
        wakes.append(asyncio.get_running_loop().time())
        woken.set()

    accepted = Lingering(wake, 0.05)
    for _ in range(10):
        accepted()
    assert wakes == [], "the first notice waits for the ones that follow"
    async with asyncio.timeout(10):
        await woken.wait()
    woken.clear()
    accepted()
    async with asyncio.timeout(10):
        await woken.wait()

    assert len(wakes) == 2


def test_without_a_linger_each_notice_wakes_the_queue_at_once() -> None:
    wakes: list[int] = []
    accepted = Lingering(lambda: wakes.append(1), 0)

    accepted()
    accepted()

    assert wakes == [1, 1]
