"""The job's admission gate: a cap on URLs in flight that admits the lowest input index first."""

from __future__ import annotations

import asyncio

from shoal.scrape import OrderedGate


async def test_waiters_are_admitted_lowest_order_first_within_the_cap() -> None:
    gate = OrderedGate(2)
    admitted: list[int] = []
    in_flight = peak = 0
    release = asyncio.Event()

    async def url(order: int) -> None:
        nonlocal in_flight, peak
        await gate.acquire(order)
        admitted.append(order)
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1
        gate.release()

    tasks = [asyncio.create_task(url(o)) for o in (50, 10, 90, 30, 0, 70)]
    while len(admitted) < 2:
        await asyncio.sleep(0)
    assert gate.should_yield(40) and not gate.should_yield(0)  # 0 waits; nothing below 0
    release.set()
    await asyncio.gather(*tasks)
    assert admitted == [50, 10, 0, 30, 70, 90]  # the first two found free slots
    assert peak == 2


async def test_a_cancelled_waiter_gives_up_its_place_and_loses_no_slot() -> None:
    gate = OrderedGate(1)
    await gate.acquire(0)
    waiting = asyncio.create_task(gate.acquire(1))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert not gate.should_yield(99)
    gate.release()
    await asyncio.wait_for(gate.acquire(5), 1)  # the one slot is free again
    gate.release()
    assert gate._free == 1 and gate._waiters == []
