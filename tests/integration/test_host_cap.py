"""``SHOAL_MAX_PER_HOST`` across jobs: two jobs scraping one site at once never have more than
the cap in flight there together, whether their chunks run in the flow or in chunk processes
(each process's engine holding its own lease on the host's slots in the job store)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy import select

from flows.scrape_job import scrape_job
from shoal.settings import get_settings
from shoal.store import HostSlotRow, get_store
from shoal.store._db import session_scope
from tests.integration.test_scrape_job_flow import _create
from tests.sites.catalog import Site


@pytest.mark.parametrize("processes", ["0", "2"])
async def test_two_jobs_share_the_hosts_cap(
    site: Site, shoal_env: Callable[[str, str], None], processes: str
) -> None:
    shoal_env("SHOAL_MAX_PER_HOST", "8")
    shoal_env("SHOAL_HOST_LEASE_S", "2")
    shoal_env("SHOAL_CHUNK_PROCESSES", processes)
    jobs = [
        _create({"urls": [site.url(f"/slow/{k}{i}?ms=20") for i in range(400)], "concurrency": 16})
        for k in (1, 2)
    ]
    site.stats.reset()
    states = await asyncio.gather(*(scrape_job(j, return_state=True) for j in jobs))
    assert all(s.is_completed() for s in states)
    store = get_store(get_settings())
    for j in jobs:
        row = store.get_job(j)
        assert row is not None and (row.status, row.urls_done) == ("completed", 400)
    # each job alone may have 8 in flight (16 for both) without the leases
    assert site.stats.peak <= 8
    with session_scope(get_settings().db_url) as s:
        assert s.scalars(select(HostSlotRow)).all() == []  # every engine gave its lease back
