"""A flow run that a later run of its job has replaced stops without touching the job: the
resume service declared it dead (its heartbeats did not arrive) and resumed the job elsewhere,
but it still lives. Without this both would fetch every URL, and the stale one would end the
job under the new one."""

from __future__ import annotations

import asyncio

from flows.scrape_job import scrape_job
from shoal.settings import get_settings
from shoal.store import get_store
from tests.integration.test_scrape_job_flow import _create, start_until
from tests.sites.catalog import Site


async def test_a_run_started_after_a_later_one_owns_the_job_does_nothing(site: Site) -> None:
    jid = _create({"urls": [site.url(f"/p/{i}") for i in range(20)]})
    store = get_store(get_settings())
    assert store.claim_resume(jid, 1, "the-resumed-run")
    state = await scrape_job(jid, return_state=True)
    assert state.is_cancelled() and state.name == "Superseded", state
    assert "the-resumed-run" in (state.message or "")
    assert sum(site.stats.hits.values()) == 0
    row = store.get_job(jid)
    assert row is not None and row.status == "queued" and row.flow_run_id == "the-resumed-run"


async def test_a_running_run_stops_when_a_later_one_takes_the_job(site: Site) -> None:
    n = 400
    jid = _create({"urls": [site.url(f"/slow/{i}?ms=50") for i in range(n)], "concurrency": 4})
    store = get_store(get_settings())
    run = await start_until(jid, 20)
    assert store.claim_resume(jid, 1, "the-resumed-run")
    state = await asyncio.wait_for(run, 60)
    assert state.is_cancelled() and state.name == "Superseded", state
    fetched = sum(v for k, v in site.stats.hits.items() if k.startswith("/slow/"))
    assert fetched < n  # it stopped instead of fetching the rest
    row = store.get_job(jid)
    assert row is not None and row.status == "running"  # left to the new run, not ended
    assert (row.flow_run_id, row.resume_count) == ("the-resumed-run", 1)
