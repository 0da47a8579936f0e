"""Change reports and quality gates through the ``scrape-job`` flow under a real Prefect
server, against the nightly catalog: night 2's report equals what the site changed, exactly
(counts, fields, old and new values); a night whose price markup breaks fails the
``max_null_rate`` gate: the job ends ``partial``, its flow run names the check, and the job
has ``job.quality_failed`` besides ``job.completed``."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.scrape_job import scrape_job
from shoal import changes
from shoal.contract import JobSpec
from shoal.settings import get_settings
from shoal.storage import get_storage
from shoal.store import get_store
from tests.integration.test_scrape_job_flow import _create
from tests.sites.catalog import CATALOG_EXTRACT, CATALOG_SELECTORS, NightlyCatalog

PRODUCTS = 300
COMPARED = ["name", "price", "in_stock"]

ACCOUNT = "nightly-changes"


@pytest.fixture
def shop(nightly: Callable[..., NightlyCatalog]) -> NightlyCatalog:
    return nightly(PRODUCTS, seed=21)


def _changes_rows(job_id: str) -> list[dict[str, Any]]:
    row = get_store(get_settings()).get_job(job_id)
    assert row is not None
    storage = get_storage(get_settings())
    name = changes.changes_name(JobSpec.model_validate(row.spec))
    with storage.open(storage.url("jobs", job_id, "output", name), "rb") as fh:
        return [orjson.loads(x) for x in gzip.decompress(fh.read()).splitlines()]


def _text(value: Any) -> str | None:
    """A value as the changes file writes it (JSON text; a string's content)."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode() if not isinstance(value, float) else repr(value)


async def test_night_two_reports_what_the_site_changed_and_a_broken_night_fails_its_gate(
    shop: NightlyCatalog,
) -> None:
    urls = shop.urls(upcoming=5)  # a fixed input: tonight's 5 new products 404 on night 1
    body = {
        "urls": urls,
        "defaults": {"extract": CATALOG_EXTRACT, "selectors": CATALOG_SELECTORS},
        "concurrency": 16,
        "output": {"format": "ndjson", "gzip": True},
        "quality": {"max_null_rate": {"price": 0.02}},
        "webhook": "https://hooks.example/shoal",
    }
    compare = {"key": "sku", "fields": COMPARED}
    first = _create(body, ACCOUNT)
    assert (await scrape_job(first, return_state=True)).is_completed()

    shop.next_night(add=5, remove=4, reprice=20, restock=7)
    second = _create(
        {**body, "compare": {**compare, "previous_job_id": first}}, ACCOUNT, previous=first
    )
    state = await scrape_job(second, return_state=True)
    store = get_store(get_settings())
    row = store.get_job(second)
    assert row is not None and row.changes is not None
    expected = shop.diff(key="sku", fields=COMPARED).counts()  # the site's own truth
    assert (expected["added"], expected["removed"]) == (5, 4)
    got = {k: row.changes[k] for k in ("added", "removed", "changed", "unchanged")}
    assert got == {k: expected[k] for k in got}
    assert row.changes["fields"] == {f: expected["fields"].get(f, 0) for f in COMPARED}
    assert row.changes["duplicate_keys"] == 0 and row.changes["previous_job_id"] == first
    want = [
        (r["key"], r["change"], r["field"], _text(r["old"]), _text(r["new"]), r["url"])
        for r in shop.diff(key="sku", fields=COMPARED).rows()
    ]
    have = sorted(
        ((r["key"], r["change"], r["field"], r["old"], r["new"], r["url"]) for r in
         _changes_rows(second)),
        key=lambda r: (r[0], r[2] or ""),
    )  # fmt: skip
    assert have == want
    # 4 removed products answer 404: errored rows, so the run is partial, but the gate passed
    assert row.status == "partial" and row.quality == {"passed": True, "failed": []}
    assert state.name == "Partial" and "quality failed" not in (state.message or "")
    async with get_client() as client:
        key = f"job-{second.lower().replace('_', '-')}-changes"
        [table] = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert table.type == "table" and "price" in str(table.data)

    shop.break_price_markup()
    third = _create(
        {**body, "compare": {**compare, "previous_job_id": second}}, ACCOUNT, previous=second
    )
    state = await scrape_job(third, return_state=True)
    row = store.get_job(third)
    assert row is not None and row.status == "partial"
    assert row.quality is not None and row.quality["passed"] is False
    [failed] = row.quality["failed"]
    assert failed["check"] == "max_null_rate.price" and failed["value"] == 1.0
    assert state.is_completed() and state.name == "Partial"
    assert "quality failed: max_null_rate.price 1 > 0.02" in (state.message or "")
    assert row.changes is not None and row.changes["fields"]["price"] == row.changes["changed"]
    events = sorted(e.type for e in store.webhook_log(third)[0])
    assert events == ["job.completed", "job.quality_failed"]
