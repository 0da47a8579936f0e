"""A data engineer's nightly catalog scrape on the real stack, through HTTP only: one schedule
(``interval_s: 60``, ``conditional``, compared by SKU, a ``max_null_rate`` gate, a webhook)
against a catalog that changes between nights on the test's command.

- Night 1 (run now): every page fetched whole, no report (nothing to compare with).
- Night 2 (run now), after products were added, removed, repriced and restocked, and the
  schedule's URL list updated as a data engineer's nightly export would be: the change report
  equals what the site changed, exactly (counts, fields, and each row of the changes file with
  its old and new value); unchanged pages answered ``304`` and cost no credit.
- Night 3, nothing changed, started by Prefect's scheduler (its run made due now): 0 changed,
  every page a ``304``.
- Night 4, the site's price markup broken: the ``max_null_rate.price`` gate fails, the run is
  ``partial`` and names the check, and ``job.quality_failed`` is sent besides
  ``job.completed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.prefect_runs import due_now, final_state, prefect_api, scheduled_runs
from tests.e2e.stack import Stack, poll_until
from tests.sites.catalog import CATALOG_EXTRACT, CATALOG_SELECTORS, NightlyCatalog
from tests.sites.receiver import Receiver

FINAL = {"completed", "partial", "cancelled", "failed"}
PRODUCTS = 120


@pytest.fixture
def shop(nightly: Callable[..., NightlyCatalog]) -> NightlyCatalog:
    return nightly(PRODUCTS, seed=29, validators="both")


def _run_now(stack: Stack, client: httpx.Client, sid: str) -> dict[str, Any]:
    r = client.post(f"/v1/schedules/{sid}/run")
    assert r.status_code == 202, r.text
    return stack.wait_job(client, r.json()["id"], FINAL, timeout=240)


def _ndjson(url: str) -> list[dict[str, Any]]:
    r = httpx.get(url, timeout=30, follow_redirects=True)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines() if line]


def _results(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        r = client.get(f"/v1/jobs/{job_id}/results", params={"limit": 1000, "offset": len(rows)})
        assert r.status_code == 200, r.text
        page = r.json()
        rows += page["results"]
        if len(rows) >= page["total"]:
            return rows


def _set_urls(client: httpx.Client, sid: str, job: dict[str, Any], urls: list[str]) -> None:
    job["input"] = {"urls": urls}
    r = client.patch(f"/v1/schedules/{sid}", json={"job": job})
    assert r.status_code == 200, r.text


def _events(hooks: Receiver, job_id: str) -> list[str]:
    return sorted(
        body["type"]
        for body in (json.loads(r.body) for r in hooks.received)
        if body["data"]["id"] == job_id
    )


def test_three_nights_of_a_catalog_and_a_broken_one(
    stack: Stack, client: httpx.Client, shop: NightlyCatalog, receiver: Receiver
) -> None:
    urls = shop.urls()
    job: dict[str, Any] = {
        "input": {"urls": urls},
        "defaults": {"extract": CATALOG_EXTRACT, "selectors": CATALOG_SELECTORS},
        "concurrency": 8,
        "webhook": receiver.url("/nightly"),
    }
    r = client.post(
        "/v1/schedules",
        json={
            "name": "nightly-catalog",
            "interval_s": 60,
            "job": job,
            "compare": {"key": "sku"},
            "conditional": True,
            "quality": {"max_null_rate": {"price": 0.2}, "max_error_rate": 0.1},
        },
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]

    # night 1: everything fetched whole; nothing to compare with
    one = _run_now(stack, client, sid)
    assert (one["status"], one["run_number"], one["urls_done"]) == ("completed", 1, len(urls))
    assert one["changes"] is None
    assert one["quality"] == {"passed": True, "failed": []}
    night1 = shop.counts(1)
    assert (night1.full, night1.not_modified, night1.not_found) == (PRODUCTS, 0, 0)

    # night 2: the catalog changed; the report says exactly what changed
    truth = shop.next_night(add=4, remove=3, reprice=9, restock=4)
    _set_urls(client, sid, job, shop.urls())
    two = _run_now(stack, client, sid)
    assert (two["status"], two["run_number"]) == ("completed", 2)
    report = two["changes"]
    assert report["previous_job_id"] == one["id"]
    expected = truth.counts()
    # every compared field is counted, those that did not change as 0
    expected["fields"] = {"name": 0, "price": 0, "in_stock": 0, **expected["fields"]}
    assert {k: report[k] for k in expected} == expected
    assert sorted(_ndjson(report["download_url"]), key=lambda r: (r["key"], r["field"] or "")) == (
        truth.rows(text=True)
    )
    rows = _results(client, two["id"])
    by_sku = {row["data"]["sku"]: row for row in rows if row["status"] == "ok"}
    assert {sku for sku, row in by_sku.items() if row["change"] == "added"} == set(truth.added)
    assert {sku for sku, row in by_sku.items() if row["change"] == "changed"} == set(truth.changed)
    assert {sku for sku, row in by_sku.items() if row["change"] == "unchanged"} == set(
        truth.unchanged
    )
    # unchanged pages were asked with night 1's validators and answered 304: no credit, the
    # row carries night 1's data
    night2 = shop.counts(2)
    assert night2.not_modified == len(truth.unchanged)
    assert night2.full == len(truth.changed) + len(truth.added)
    carried = [row for row in rows if row.get("not_modified")]
    assert len(carried) == len(truth.unchanged)
    assert all(row["credits"] == 0 and row["http_status"] == 304 for row in carried)
    assert {row["data"]["sku"]: row["data"] for row in carried} == {
        sku: data for sku, data in shop.data().items() if sku in set(truth.unchanged)
    }
    assert two["credits_used"] == night2.full < one["credits_used"] == PRODUCTS

    # night 3: nothing changed; Prefect's scheduler starts the run (made due now)
    shop.next_night()
    with prefect_api(stack) as prefect:
        flow_run = scheduled_runs(stack, prefect, sid)[0]
        due_now(prefect, flow_run["id"])
        assert final_state(stack, prefect, flow_run["id"])["state"]["type"] == "COMPLETED"
    three = poll_until(
        lambda: client.get(f"/v1/jobs?schedule_id={sid}").json()["jobs"][0],
        lambda j: j["run_number"] == 3 and j["status"] in FINAL,
        60,
        "run 3 did not end",
        stack._logs,
    )
    assert three["flow_run_id"] == flow_run["id"] and three["status"] == "completed"
    assert three["changes"]["previous_job_id"] == two["id"]
    assert (three["changes"]["added"], three["changes"]["removed"]) == (0, 0)
    assert three["changes"]["changed"] == 0
    night3 = shop.counts(3)
    assert night3.full == 0 and night3.not_modified == len(shop.products)
    assert three["credits_used"] == 0

    # night 4: the price markup breaks; the gate fails the run and says so
    shop.break_price_markup()
    four = _run_now(stack, client, sid)
    assert (four["status"], four["run_number"]) == ("partial", 4)
    (failed,) = four["quality"]["failed"]
    assert (failed["check"], failed["limit"], failed["value"]) == ("max_null_rate.price", 0.2, 1.0)
    assert four["quality"]["passed"] is False
    poll_until(
        lambda: {"events": _events(receiver, four["id"])},
        lambda got: got["events"] == ["job.completed", "job.quality_failed"],
        60,
        "job.quality_failed and job.completed were not both sent",
        stack._logs,
    )
    assert _events(receiver, one["id"]) == ["job.completed"]
    with prefect_api(stack) as prefect:
        run = prefect.get(f"/flow_runs/{four['flow_run_id']}").json()
    assert "max_null_rate.price" in run["state"]["message"]

    got = client.get(f"/v1/schedules/{sid}").json()
    assert (got["runs"], got["last_job_id"], got["skipped_runs"]) == (4, four["id"], 0)
    # what the night cost (shown with -s): the site's own counts and the job's credits
    for n, run in enumerate((one, two, three, four), 1):
        c = shop.counts(n)
        hidden = ("download_url", "previous_job_id")
        report = {k: v for k, v in (run["changes"] or {}).items() if k not in hidden}
        print(
            f"night {n}: {run['status']:9} changes {json.dumps(report)} quality "
            f"{json.dumps(run['quality'])} | site: {c.full} full ({c.bytes} B), "
            f"{c.not_modified} x 304 | credits {run['credits_used']}"
        )
    assert client.delete(f"/v1/schedules/{sid}").status_code == 204
