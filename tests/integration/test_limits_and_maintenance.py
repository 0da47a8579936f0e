"""Limits through the real flow: the job lifetime, output split into parts, and the
``maintenance`` flow removing results past retention."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import orjson

from flows.maintenance import maintenance
from flows.scrape_job import scrape_job
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import get_store, utcnow
from tests.integration.test_scrape_job_flow import _create
from tests.sites.catalog import Site


def _rows(url: str) -> list[dict]:
    data = get_storage(get_settings()).open(url, "rb").read()
    return [orjson.loads(x) for x in data.splitlines()]


async def test_a_job_past_its_lifetime_is_cancelled_with_what_finished(
    site: Site, shoal_env: Callable[[str, str], None]
) -> None:
    shoal_env("SHOAL_JOB_LIFETIME_S", "1")
    n = 300
    jid = _create({"urls": [site.url(f"/slow/{i}?ms=200") for i in range(n)], "concurrency": 4})
    state = await scrape_job(jid, return_state=True)
    assert state.is_cancelled()
    row = get_store(get_settings()).get_job(jid)
    assert row is not None and row.status == "cancelled"
    assert row.error and "lifetime" in row.error
    assert 0 < row.urls_done < n
    rows = _rows(row.outputs[0]["url"])
    assert len(rows) == row.urls_done
    indexes = [r["input_index"] for r in rows]
    assert indexes == sorted(set(indexes))  # each once, in input order


async def test_output_over_the_part_limit_is_split_with_every_row_once(
    site: Site, shoal_env: Callable[[str, str], None]
) -> None:
    shoal_env("SHOAL_MAX_PART_BYTES", "40000")
    n = 600
    jid = _create({"urls": [site.url(f"/p/{i}") for i in range(n)], "concurrency": 16})
    await scrape_job(jid)
    row = get_store(get_settings()).get_job(jid)
    assert row is not None and row.status == "completed" and row.outputs
    assert len(row.outputs) > 1
    seen: list[int] = []
    for part in row.outputs:
        rows = _rows(part["url"])
        assert len(rows) == part["rows"] > 0
        assert get_storage(get_settings()).size(part["url"]) == part["size_bytes"]
        seen += [r["input_index"] for r in rows]
    assert seen == list(range(n))


async def test_maintenance_flow_removes_results_past_retention(site: Site) -> None:
    jid = _create({"urls": [site.url("/p/1")]})
    await scrape_job(jid)
    store = get_store(get_settings())
    row = store.get_job(jid)
    assert row is not None and row.outputs
    out = row.outputs[0]["url"]
    storage = get_storage(get_settings())
    assert storage.exists(out)
    store.update_job(
        jid,
        completed_at=utcnow() - timedelta(days=400),
        output_expires_at=utcnow() - timedelta(seconds=1),
    )
    report = await maintenance()
    assert jid in report["jobs_removed"]
    assert not storage.exists(out)
    assert store.get_job(jid).results_removed_at is not None
