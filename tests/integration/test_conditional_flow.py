"""Conditional fetch through the ``scrape-job`` flow under a real Prefect server: night 1 is
fetched whole; night 2, asked with night 1's validators, gets 304s for the pages that did not
change (the catalog site's counters prove it), carries night 1's rows forward for them with
``not_modified`` and no credit, and fetches the changed and new pages whole."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from flows.scrape_job import scrape_job
from shoal.conditional import plan_url
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import get_store
from tests.integration.test_scrape_job_flow import _create
from tests.sites.catalog import CATALOG_EXTRACT, CATALOG_SELECTORS, NightlyCatalog

PRODUCTS = 600

ACCOUNT = "nightly"


@pytest.fixture
def shop(nightly: Callable[..., NightlyCatalog]) -> NightlyCatalog:
    return nightly(PRODUCTS, seed=7)


def _lines(job_id: str) -> list[dict]:
    row = get_store(get_settings()).get_job(job_id)
    assert row is not None and row.outputs
    with get_storage(get_settings()).open(row.outputs[0]["url"], "rb") as fh:
        return [orjson.loads(x) for x in fh.read().splitlines()]


async def test_the_second_night_gets_304s_and_carries_the_first_nights_rows(
    shop: NightlyCatalog, record_property
) -> None:
    urls = shop.urls(upcoming=5)  # a fixed list: the 5 products added tonight 404 on night 1
    body = {
        "urls": urls,
        "defaults": {"extract": CATALOG_EXTRACT, "selectors": CATALOG_SELECTORS},
        "concurrency": 16,
    }
    first = _create(body, ACCOUNT)
    state = await scrape_job(first, return_state=True)
    assert state.is_completed()
    night1 = _lines(first)
    assert shop.counts(1).full == PRODUCTS and shop.counts(1).conditional == 0

    diff = shop.next_night(add=5, remove=4, reprice=30, restock=6, null_prices=3)
    second = _create({**body, "compare": {"previous_job_id": first}}, ACCOUNT, previous=first)
    store = get_store(get_settings())
    row = store.get_job(second)
    assert row is not None
    # what a schedule's run gets: the API takes `conditional` on schedules only
    store.update_job(second, spec={**row.spec, "conditional": True})
    state = await scrape_job(second, return_state=True)
    assert state.is_completed()
    assert get_storage(get_settings()).exists(plan_url(get_storage(get_settings()), second))

    counts = shop.counts(2)
    changed = len(diff.changed)
    unchanged = len(diff.unchanged)
    assert (changed, unchanged) == (39, PRODUCTS - 4 - 39)
    # asked: every URL ok last night; a 304 for each unchanged page, the rest whole
    assert counts.conditional == PRODUCTS
    assert counts.not_modified == unchanged
    assert counts.full == changed + 5 and counts.not_found == 4
    night2 = _lines(second)
    assert [x["url"] for x in night2] == urls
    carried = [x for x in night2 if x.get("not_modified")]
    assert len(carried) == unchanged
    before = {x["url"]: x for x in night1}
    for x in carried:
        assert (x["status"], x["http_status"], x["credits"]) == ("ok", 304, 0)
        assert x["data"] == before[x["url"]]["data"] == shop.data()[x["url"].rsplit("/", 1)[1]]
        assert x["content_hash"] == before[x["url"]]["content_hash"]
    for x in night2:
        sku = x["url"].rsplit("/", 1)[1]
        if not x.get("not_modified") and sku in shop.products:
            assert (x["http_status"], x["credits"]) == (200, 1)
            assert x["data"] == shop.data()[sku]
    one = shop.counts(1)
    record_property(
        "summary",
        f"conditional fetch: night 1 {one.full} x 200 ({one.bytes:,} B), night 2 "
        f"{counts.full} x 200 ({counts.bytes:,} B) + {counts.not_modified} x 304",
    )
    job = store.get_job(second)
    assert job is not None
    # credits: the full answers and the 404s, never a 304
    assert job.credits_used == counts.full + counts.not_found
    assert job.credits_used < store.get_job(first).credits_used / 5  # type: ignore[union-attr]
