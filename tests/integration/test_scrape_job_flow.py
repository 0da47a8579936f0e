"""The ``scrape-job`` flow under a real Prefect server, fetching from a real local site."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from flows.scrape_job import scrape_job
from shoal import jobs
from shoal.contract import JobCreate
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import get_store
from tests.sites.catalog import Site, price_of


def _create(body: dict, account_name: str = "integration", previous: str | None = None) -> str:
    """A queued job as ``POST /v1/jobs`` makes it, without starting a flow run: inline URLs are
    staged now, a file input (upload, S3) is left to the flow. ``previous``: the job a
    ``compare.previous_job_id`` in ``body`` names (validated against it)."""
    settings = get_settings()
    store = get_store(settings)
    account, _ = store.get_or_create_account(account_name)
    req = JobCreate.model_validate(body)
    prev = store.get_job(previous) if previous else None
    spec, items = jobs.validate(req, settings, account, previous=prev)
    row = jobs.new_job_row(req, spec, account, urls_total=len(items) if items else None)
    if items:
        jobs.stage_inline(get_storage(settings), row.id, items)
    store.insert_job(row)
    return row.id


async def start_until(jid: str, done: int, timeout: float = 60) -> asyncio.Task[Any]:
    """Start the job's flow as a task and return it once ``done`` URLs are counted (a poll with
    a deadline: the job must get going, and must not end first)."""
    run = asyncio.create_task(scrape_job(jid, return_state=True))
    store = get_store(get_settings())
    deadline = time.monotonic() + timeout
    while store.counters(jid).done < done:
        assert time.monotonic() < deadline and not run.done(), "the job never got going"
        await asyncio.sleep(0.05)
    return run


async def test_flow_completes_and_state_matches(site: Site) -> None:
    jid = _create(
        {
            "urls": [site.url(f"/p/{i}") for i in range(600)],
            "defaults": {"extract": {"price": "number"}},
            "concurrency": 16,
        }
    )
    state = await scrape_job(jid, return_state=True)
    assert state.is_completed() and state.name == "Completed"
    row = get_store(get_settings()).get_job(jid)
    assert row is not None
    assert (row.status, row.urls_done, row.urls_errored) == ("completed", 600, 0)
    out = get_storage(get_settings()).open(row.outputs[0]["url"], "rb").read()
    lines = [orjson.loads(x) for x in out.splitlines()]
    assert [x["data"]["price"] for x in lines] == [price_of(i) for i in range(600)]


async def test_rerun_skips_cached_chunks(site: Site) -> None:
    """A second run of the same job (as after a crash) takes every chunk from the
    (job, chunk) cache: the site sees no new request, and the output is the same."""
    jid = _create({"urls": [site.url(f"/p/{i}") for i in range(520)], "concurrency": 8})
    await scrape_job(jid)
    assert site.stats.hits["/robots.txt"] == 1  # fetched once per host, respected by default
    hits = sum(site.stats.hits.values())
    assert hits == 520 + 1
    store = get_store(get_settings())
    store.update_job(jid, status="running", completed_at=None)  # as if it crashed at the end
    state = await scrape_job(jid, return_state=True)
    assert state.is_completed()
    assert sum(site.stats.hits.values()) == hits
    row = store.get_job(jid)
    assert row is not None and (row.status, row.urls_done) == ("completed", 520)


async def test_errors_are_rows_and_state_is_partial(site: Site) -> None:
    urls = [site.url("/p/1"), site.url("/status/503/1"), "http://127.0.0.1:9/nothing"]
    jid = _create({"urls": urls, "defaults": {"timeout_s": 5}})
    state = await scrape_job(jid, return_state=True)
    assert state.is_completed() and state.name == "Partial"
    row = get_store(get_settings()).get_job(jid)
    assert row is not None and (row.urls_done, row.urls_errored) == (3, 2)
    out = get_storage(get_settings()).open(row.outputs[0]["url"], "rb").read()
    codes = [(orjson.loads(x)["error"] or {}).get("code") for x in out.splitlines()]
    assert codes == [None, "http_5xx", "connect"]


async def test_robots_txt_respected_by_default_and_per_url_opt_out() -> None:
    from tests.sites.hostile import HostileSite

    with HostileSite() as hostile:  # its robots.txt disallows /private/ for every agent
        jid = _create(
            {
                "urls": [
                    hostile.url("/ok"),
                    hostile.url("/private/a"),
                    {"url": hostile.url("/private/b"), "respect_robots": False},
                ]
            }
        )
        await scrape_job(jid)
        assert hostile.hits["/private/a"] == 0
        assert hostile.hits["/private/b"] == 1
    row = get_store(get_settings()).get_job(jid)
    assert row is not None
    out = get_storage(get_settings()).open(row.outputs[0]["url"], "rb").read()
    results = [orjson.loads(x) for x in out.splitlines()]
    assert [(r["status"], (r["error"] or {}).get("code")) for r in results] == [
        ("ok", None),
        ("error", "robots_disallowed"),
        ("ok", None),
    ]
