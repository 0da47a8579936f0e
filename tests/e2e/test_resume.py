"""Every job reaches a final status: ``kill -9`` of the whole stack mid-job, then ``shoal up``
again on the same data folder resumes the job, and finished chunks are not fetched again."""

from __future__ import annotations

import httpx
import orjson

from tests.e2e.conftest import E2E_ENV
from tests.e2e.stack import Stack
from tests.sites.catalog import Site

FINAL = {"completed", "partial", "cancelled", "failed"}


def test_kill9_then_up_again_resumes(tmp_path, site: Site) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    # the least zombie window Shoal accepts (the default is 60 s): the dead run's heartbeats
    # are what tells the new stack it is gone
    env = {**E2E_ENV, "SHOAL_CHUNK_MAX_URLS": "250", "SHOAL_ZOMBIE_AFTER_S": "45"}
    first = Stack(data, **env).start()
    n = 1500  # six chunks of 250
    urls = [site.url(f"/slow/{i}?ms=40") for i in range(n)]
    try:
        with first.client() as c:
            jid = c.post("/v1/jobs", json={"input": {"urls": urls}, "concurrency": 8}).json()["id"]
            before = first.wait_job(
                c, jid, {"running"}, timeout=60, until=lambda j: j["urls_done"] >= 600
            )
    finally:
        first.kill9()
    old_flow_run = before["flow_run_id"]
    hits_at_kill = sum(site.stats.hits.values())
    assert hits_at_kill < n

    second = Stack(data, **env)
    second.port, second.prefect_port = first.port, first.prefect_port
    second.start()
    try:
        with second.client() as c:
            assert c.get(f"/v1/jobs/{jid}").json()["status"] == "running"  # found again
            job = second.wait_job(c, jid, FINAL, timeout=180)
            assert job["status"] == "completed", job
            assert job["urls_done"] == n and job["urls_errored"] == 0
            assert job["flow_run_id"] != old_flow_run  # resumed as a new flow run
            r = httpx.get(job["download_url"], timeout=30)
            lines = [orjson.loads(x) for x in r.content.splitlines()]
            assert [x["url"] for x in lines] == urls  # every URL exactly once, in order
            old = httpx.get(
                f"http://127.0.0.1:{second.prefect_port}/api/flow_runs/{old_flow_run}"
            ).json()
            assert old["state"]["type"] == "CRASHED"
    finally:
        second.stop()
    # chunk 0 had finished before the kill: cached by (job, chunk), it was not fetched again
    assert all(site.stats.hits[f"/slow/{i}"] == 1 for i in range(250))
    assert sum(site.stats.hits.values()) < n + hits_at_kill
