"""Child processes for the host-slot tests (``tests/unit/test_host_slots.py``).

    python -m tests.hostslots_worker grants DB_URL HOST CAP ROUNDS SEED
        claim, shrink and release slots of HOST at random, as fast as the store answers
    python -m tests.hostslots_worker fetch DB_URL URL_PREFIX N CONCURRENCY
        print "ready", wait for a line on stdin (so several start together), fetch
        URL_PREFIX0..N-1 through an Engine sharing the store's host
        slots (SHOAL_MAX_PER_HOST and SHOAL_HOST_LEASE_S from the environment), then print one
        JSON line: the loop time of each completion, the engine's peak and its transactions

Each runs with its own store connection, as a worker on another machine would.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time


def grants(url: str, host: str, cap: int, rounds: int, seed: int) -> None:
    from shoal.store import HostLeases

    leases = HostLeases(url)
    rng = random.Random(seed)
    holder = f"proc-{os.getpid()}"
    held = granted = 0
    for _ in range(rounds):
        roll = rng.random()
        if roll < 0.6:
            held = leases.sync(holder, cap=cap, lease_s=30, claim={host: rng.randint(1, cap)})[
                host
            ].slots
            granted += held > 0
        elif roll < 0.8 and held:
            held = rng.randint(0, held)
            leases.sync(holder, cap=cap, lease_s=30, keep={host: (held, 0)})
        else:
            leases.sync(holder, cap=cap, lease_s=30, release=[host])
            held = 0
    leases.release_all(holder)
    print(granted, flush=True)  # how many claims got slots


async def _fetch(url: str, prefix: str, n: int, concurrency: int) -> None:
    from shoal.fetch import Engine, FetchOptions
    from shoal.settings import Settings
    from shoal.store import HostLeases

    settings = Settings()
    engine = Engine(concurrency=concurrency, settings=settings, host_leases=HostLeases(url))
    options = FetchOptions(timeout_s=60, respect_robots=False)
    urls = iter(range(n))
    done: list[float] = []

    async def worker() -> None:
        for i in urls:
            await engine.fetch(f"{prefix}{i}", options)
            done.append(time.time())

    async with engine:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        shared = engine.host_slots
        assert shared is not None
        result = {"done": done, "peak": engine.peak_in_flight, "tx": shared.transactions}
    print(json.dumps(result), flush=True)


def main(argv: list[str]) -> None:
    if argv[0] == "grants":
        grants(argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5]))
    elif argv[0] == "fetch":
        # imported before "ready", so both processes start fetching at once
        from shoal.fetch import Engine  # noqa: F401
        from shoal.store import HostLeases  # noqa: F401

        print("ready", flush=True)
        sys.stdin.readline()  # the parent's go, once every process is ready
        asyncio.run(_fetch(argv[1], argv[2], int(argv[3]), int(argv[4])))
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
