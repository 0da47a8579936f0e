"""What an operator reads on a job's flow run in the Prefect UI: a summary with errors by code and
the hosts that failed most, a link to the download, progress at the true fraction, and chunk
task runs that end in the state matching what happened to them."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import TaskRunSort

from flows.scrape_job import scrape_job
from shoal.settings import get_settings
from shoal.store import get_store
from tests.integration.test_scrape_job_flow import _create, start_until
from tests.sites.catalog import Site


async def _artifacts(flow_run_id: str) -> dict[str, Any]:
    """The run's artifacts by key (by type where they have none: the progress one)."""
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            limit=50,
        )
    return {a.key or a.type: a.model_dump() for a in found}


async def test_summary_names_errors_hosts_output_and_links_the_download(site: Site) -> None:
    store = get_store(get_settings())
    account, _ = store.get_or_create_account("page-reader")
    urls = [site.url(f"/p/{i}") for i in range(4)] + [
        site.url(f"/status/404/{i}") for i in range(3)
    ]
    jid = _create({"urls": urls, "name": "nightly catalog"}, account_name="page-reader")
    state = await scrape_job(jid, return_state=True)
    assert state.is_completed() and state.name == "Partial"
    row = store.get_job(jid)
    assert row is not None and row.flow_run_id
    found = await _artifacts(row.flow_run_id)
    key = "job-" + jid.lower().replace("_", "-")
    summary = str(found[key]["data"])
    assert "nightly catalog" in summary and account.name in summary
    assert "| `http_4xx` | 3 |" in summary
    assert "| 127.0.0.1 | 3 |" in summary  # the host that failed, with its count
    assert row.outputs[0]["url"] in summary  # where the output is
    assert "/v1/downloads/" + jid in str(found[key + "-download"]["data"])
    assert found["progress"]["data"] == 100.0


async def test_a_cancelled_job_reads_its_true_fraction_and_cancelled_chunks(site: Site) -> None:
    n = 300
    jid = _create({"urls": [site.url(f"/slow/{i}?ms=60") for i in range(n)], "concurrency": 2})
    store = get_store(get_settings())
    run = await start_until(jid, 10)
    assert store.request_cancel(jid)  # what DELETE /v1/jobs/{id} does
    state = await asyncio.wait_for(run, 60)
    assert state.is_cancelled()
    row = store.get_job(jid)
    assert row is not None and row.status == "cancelled" and 10 <= row.urls_done < n
    found = await _artifacts(row.flow_run_id or "")
    assert found["progress"]["data"] == round(100.0 * row.urls_done / n, 1)
    async with get_client() as client:
        chunks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[row.flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )
    states = {t.state.type for t in chunks if t.name.startswith("chunk-")}
    assert StateType.CANCELLED in states and StateType.RUNNING not in states
