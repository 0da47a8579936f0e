"""Conditional fetch for rendered URLs (issue 14) through the ``scrape-job`` flow, in real
Chromium against the nightly catalog on 127.0.0.1: night 1 renders every page (and keeps the
document's validators); night 2 asks each URL first with a plain conditional GET through the
engine. An unchanged page's ``304`` carries night 1's row forward (``not_modified``, no credit,
its screenshot copied into the job; rendered afresh when that picture is gone); a changed page
is rendered, and pays the extra request the site's counters show: its first answer is a
``200`` nobody reads."""

from __future__ import annotations

from urllib.parse import urlsplit

import orjson
from fastapi.testclient import TestClient

from api.app import create_app
from flows.scrape_job import scrape_job
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import get_store
from tests.integration.test_scrape_job_flow import _create
from tests.sites.catalog import CATALOG_EXTRACT, CATALOG_SELECTORS, NightlyCatalog
from tests.sites.render import need_browser

PRODUCTS = 12
ACCOUNT = "rendered-nightly"


def _lines(job_id: str) -> list[dict]:
    row = get_store(get_settings()).get_job(job_id)
    assert row is not None and row.outputs
    with get_storage(get_settings()).open(row.outputs[0]["url"], "rb") as fh:
        return [orjson.loads(x) for x in fh.read().splitlines()]


async def test_a_rendered_night_asks_conditionally_first(nightly) -> None:
    need_browser()
    shop: NightlyCatalog = nightly(PRODUCTS, seed=11)
    urls = shop.urls()
    body = {
        "urls": urls,
        "defaults": {
            "render": True,
            "extract": CATALOG_EXTRACT,
            "selectors": CATALOG_SELECTORS,
            "formats": ["data", "screenshot"],
            "timeout_s": 20,
        },
        "concurrency": 4,
    }
    first = _create(body, ACCOUNT)
    assert (await scrape_job(first, return_state=True)).is_completed()
    night1 = _lines(first)
    assert all(x["status"] == "ok" and x["http_status"] == 200 for x in night1), night1
    assert shop.counts(1).full == PRODUCTS and shop.counts(1).conditional == 0

    diff = shop.next_night(reprice=3, restock=1)
    changed = {diff.urls[k] for k in diff.changed}
    assert len(changed) == 4
    settings = get_settings()
    storage = get_storage(settings)
    # one unchanged page's picture is gone since: its 304 cannot carry it, so it is rendered
    lost = next(i for i, u in enumerate(urls) if u not in changed)
    storage.rm(storage.url("jobs", first, "screenshots", f"{lost}.png"))
    second = _create({**body, "compare": {"previous_job_id": first}}, ACCOUNT, previous=first)
    store = get_store(settings)
    row = store.get_job(second)
    assert row is not None
    store.update_job(second, spec={**row.spec, "conditional": True})  # as a schedule's run
    assert (await scrape_job(second, return_state=True)).is_completed()

    counts = shop.counts(2)
    assert counts.conditional == PRODUCTS  # every URL asked first, with night 1's validators
    assert counts.not_modified == PRODUCTS - len(changed)
    # the cost: a changed page answers twice, the plain GET's 200 and the browser's load
    # (and the page whose picture was gone once, to the browser)
    assert counts.full == 2 * len(changed) + 1
    night2 = _lines(second)
    assert [x["url"] for x in night2] == urls
    before = {x["url"]: x for x in night1}
    data = shop.data()
    for i, x in enumerate(night2):
        assert x["status"] == "ok", x
        assert x["data"] == data[x["url"].rsplit("/", 1)[1]], x
        # every row has its screenshot in this job's folder (carried rows: copied)
        assert storage.exists(storage.url("jobs", second, "screenshots", f"{i}.png"))
        assert urlsplit(x["screenshot_url"]).path.endswith(f"/{second}/screenshot-{i}.png")
        if x["url"] in changed or i == lost:
            assert x.get("not_modified") is None, x
            assert (x["http_status"], x["credits"]) == (200, settings.credits_render)
        else:
            assert (x["http_status"], x["credits"], x["not_modified"]) == (304, 0, True), x
            assert x["data"] == before[x["url"]]["data"]
            assert x["content_hash"] == before[x["url"]]["content_hash"]
    job = store.get_job(second)
    assert job is not None and job.credits_used == (len(changed) + 1) * settings.credits_render

    # a carried row's screenshot downloads through its link, as a rendered one's does
    carried = next(x for x in night2 if x.get("not_modified"))
    link = urlsplit(carried["screenshot_url"])
    with TestClient(create_app()) as client:
        got = client.get(f"{link.path}?{link.query}")
    assert got.status_code == 200 and got.content.startswith(b"\x89PNG\r\n\x1a\n")
