"""A job's chunks in worker processes (``SHOAL_CHUNK_PROCESSES``): same output as in the flow
process, the job's ``concurrency`` still a true cap, a cancel still stops it, no process left."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from flows.scrape_job import scrape_job
from shoal import chunkprocs
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import get_store
from tests.integration.test_scrape_job_flow import _create
from tests.procs import children, process_running
from tests.sites.catalog import Site


@pytest.fixture
def chunk_processes(shoal_env: Callable[[str, str], None]) -> Callable[[str], None]:
    """Run the test body with SHOAL_CHUNK_PROCESSES=2; call the fixture to change it."""

    def set_procs(n: str) -> None:
        shoal_env("SHOAL_CHUNK_PROCESSES", n)

    set_procs("2")
    return set_procs


def _output(jid: str) -> bytes:
    row = get_store(get_settings()).get_job(jid)
    assert row is not None and row.outputs
    return get_storage(get_settings()).open(row.outputs[0]["url"], "rb").read()


async def test_same_output_in_processes_as_in_the_flow(
    site: Site, chunk_processes: Callable[[str], None]
) -> None:
    body = {
        "urls": [site.url(f"/p/{i}") for i in range(1000)],
        "defaults": {"selectors": {"title": "h1", "price": ".price"}},
        "concurrency": 16,
    }
    chunk_processes("0")
    inline = _create(body)
    await scrape_job(inline)
    chunk_processes("2")
    spread = _create(body)
    state = await scrape_job(spread, return_state=True)
    assert state.is_completed() and state.name == "Completed"
    store = get_store(get_settings())
    a, b = store.get_job(inline), store.get_job(spread)
    assert a is not None and b is not None
    assert (
        (b.status, b.urls_done, b.urls_errored, b.credits_used)
        == (
            a.status,
            a.urls_done,
            a.urls_errored,
            a.credits_used,
        )
        == ("completed", 1000, 0, 1000)
    )

    import orjson

    def rows(raw: bytes) -> list[dict]:
        out = []
        for line in raw.splitlines():
            r = orjson.loads(line)
            for k in ("fetched_at", "elapsed_ms"):  # timings differ run to run
                r.pop(k, None)
            out.append(r)
        return out

    assert rows(_output(spread)) == rows(_output(inline))
    assert chunkprocs.current() is None  # the flow ended: its processes are gone


async def test_concurrency_stays_a_true_cap(
    site: Site, chunk_processes: Callable[[str], None]
) -> None:
    jid = _create({"urls": [site.url(f"/slow/{i}?ms=60") for i in range(1000)], "concurrency": 16})
    site.stats.reset()
    pids: list[int] = []

    async def watch() -> None:
        while not pids:
            procs = chunkprocs.current()
            if procs is not None:
                pids.extend(p.process.pid for p in procs._procs if p is not None and p.process.pid)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    state = await scrape_job(jid, return_state=True)
    watcher.cancel()
    assert state.is_completed()
    assert 14 <= site.stats.peak <= 16  # both processes busy, never above the job's concurrency
    assert len(pids) == 2 and not any(process_running(p) for p in pids)


async def test_cancel_stops_the_worker_processes(
    site: Site, chunk_processes: Callable[[str], None]
) -> None:
    jid = _create({"urls": [site.url(f"/slow/{i}?ms=50") for i in range(1000)], "concurrency": 16})
    store = get_store(get_settings())
    run = asyncio.create_task(scrape_job(jid, return_state=True))
    while store.counters(jid).done < 100:  # live counters flushed by the worker processes
        await asyncio.sleep(0.05)
        assert not run.done()
    store.request_cancel(jid)
    hits = sum(site.stats.hits.values())
    state = await asyncio.wait_for(run, 30)
    assert state.is_cancelled()
    row = store.get_job(jid)
    assert row is not None and row.status == "cancelled"
    assert 100 <= row.urls_done < 1000
    # noticed within about a second (0.2 s ticks here): at most ~1 s of 16-in-flight 50 ms pages
    assert sum(site.stats.hits.values()) - hits < 16 * 20 + 32
    assert len(_output(jid).splitlines()) == row.urls_done


async def test_one_level_of_worker_processes(site: Site, shoal_env) -> None:  # type: ignore[no-untyped-def]
    """Markdown (a heavy format, parsed in a pool of processes when chunks run in the flow) in a
    job whose chunks run in worker processes: each of those parses inline, so no process of the
    job has a process pool under it (before: cores x cores processes)."""
    shoal_env("SHOAL_CHUNK_PROCESSES", "2")
    shoal_env("SHOAL_PARSE_WORKERS", "2")
    jid = _create(
        {
            "urls": [site.url(f"/slow/{i}?ms=20") for i in range(400)],
            "defaults": {"formats": ["markdown"]},
            "concurrency": 16,
        }
    )
    run = asyncio.create_task(scrape_job(jid, return_state=True))
    seen: set[int] = set()
    grandchildren: set[int] = set()
    deadline = time.monotonic() + 120
    while not run.done():
        assert time.monotonic() < deadline, "the job did not end"
        procs = chunkprocs.current()
        for p in list(procs._procs) if procs is not None else []:
            if p is not None and p.process.pid and process_running(p.process.pid):
                seen.add(p.process.pid)
                grandchildren.update(children(p.process.pid))
        await asyncio.sleep(0.05)
    state = await run
    assert state.is_completed(), state
    assert get_store(get_settings()).counters(jid).done == 400
    assert len(seen) == 2  # the job did run in two chunk processes
    assert grandchildren == set(), "a chunk process started processes of its own"
