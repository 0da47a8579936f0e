"""A job through HTTP only, on the real stack: Prefect server, worker and API."""

from __future__ import annotations

import csv as pycsv
import gzip
import io
import json
import time

import httpx
import orjson
import polars as pl

from tests.e2e.stack import Stack
from tests.procs import children, cmdline
from tests.sites.catalog import Site, price_of

FINAL = {"completed", "partial", "cancelled", "failed"}
SCHEMA = {"name": "string", "price": "number"}


def _submit(client: httpx.Client, body: dict) -> str:
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued"
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200  # committed before the answer
    return job["id"]


def _download(job: dict) -> bytes:
    assert job["result_available"] is True
    r = httpx.get(job["download_url"], timeout=60)  # no API key: the link is signed
    assert r.status_code == 200
    return r.content


def _prefect_state(stack: Stack, flow_run_id: str, timeout: float = 30) -> dict:
    """The flow run's final state. The job row ends a moment before its flow run does (the
    flow writes its summary artifact, then returns): poll until the run is final."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"http://127.0.0.1:{stack.prefect_port}/api/flow_runs/{flow_run_id}")
        r.raise_for_status()
        state = r.json()["state"]
        if state["type"] in ("COMPLETED", "CANCELLED", "FAILED", "CRASHED"):
            return state
        assert time.monotonic() < deadline, f"flow run {flow_run_id} still {state['type']}"
        time.sleep(0.1)


def test_two_thousand_urls_every_format(stack: Stack, client: httpx.Client, site: Site) -> None:
    n = 2000
    urls = [site.url(f"/p/{i}") for i in range(n)]
    ids = {
        fmt: _submit(
            client,
            {
                "input": {"urls": urls},
                "defaults": {"extract": SCHEMA},
                "concurrency": 64,
                "output": out,
            },
        )
        for fmt, out in {
            "parquet": {"format": "parquet"},
            "csv": {"format": "csv"},
            "ndjson": {"format": "ndjson", "gzip": True},
        }.items()
    }
    jobs = {fmt: stack.wait_job(client, jid, FINAL, timeout=300) for fmt, jid in ids.items()}
    for fmt, job in jobs.items():
        assert job["status"] == "completed", (fmt, job)
        assert (job["urls_total"], job["urls_done"], job["urls_errored"]) == (n, n, 0)
        assert job["credits_used"] == n and job["eta_s"] == 0
        assert job["progress"]["percentage"] == 100.0
        state = _prefect_state(stack, job["flow_run_id"])
        assert (state["type"], state["name"]) == ("COMPLETED", "Completed")

    pq = pl.read_parquet(io.BytesIO(_download(jobs["parquet"])))
    assert pq.schema["price"] == pl.Float64
    assert pq["url"].to_list() == urls  # each URL exactly once, in input order
    assert pq["input_index"].to_list() == list(range(n))
    assert pq["price"].to_list() == [price_of(i) for i in range(n)]
    assert pq["name"].to_list() == [f"Product {i}" for i in range(n)]

    csv = pl.read_csv(io.BytesIO(_download(jobs["csv"])))
    assert csv["url"].to_list() == urls
    assert csv["price"].to_list() == pq["price"].to_list()

    raw = _download(jobs["ndjson"])
    lines = [orjson.loads(x) for x in gzip.decompress(raw).splitlines()]
    assert [x["url"] for x in lines] == urls
    assert [x["data"]["price"] for x in lines] == pq["price"].to_list()
    assert all(x["status"] == "ok" and x["error"] is None for x in lines)

    # paged JSON results after the end
    page = client.get(f"/v1/jobs/{ids['parquet']}/results", params={"limit": 10, "offset": 1995})
    assert page.status_code == 200
    body = page.json()
    assert body["total"] == n and [r["input_index"] for r in body["results"]] == [
        1995,
        1996,
        1997,
        1998,
        1999,
    ]


def test_mixed_errors_end_partial(stack: Stack, client: httpx.Client, site: Site) -> None:
    plan = (
        [("ok", site.url(f"/p/{i}")) for i in range(20)]
        + [("http_4xx", site.url(f"/status/404/{i}")) for i in range(5)]
        + [("http_5xx", site.url(f"/status/500/{i}")) for i in range(4)]
        + [("timeout", site.url(f"/hang/{i}")) for i in range(3)]
    )
    items = [{"url": u, "meta": {"k": i}} for i, (_, u) in enumerate(plan)]
    jid = _submit(
        client, {"input": {"urls": items}, "defaults": {"timeout_s": 1}, "concurrency": 16}
    )
    job = stack.wait_job(client, jid, FINAL, timeout=120)
    assert job["status"] == "partial"
    assert (job["urls_done"], job["urls_errored"]) == (len(plan), 12)
    lines = [orjson.loads(x) for x in _download(job).splitlines()]
    assert [x["url"] for x in lines] == [u for _, u in plan]
    assert [x["meta"] for x in lines] == [{"k": i} for i in range(len(plan))]
    for (want, _), got in zip(plan, lines, strict=True):
        if want == "ok":
            assert got["status"] == "ok" and got["http_status"] == 200
        else:
            assert got["status"] == "error" and got["error"]["code"] == want, got
    assert [x["http_status"] for x in lines if x["error"] and x["error"]["code"] == "http_4xx"] == [
        404
    ] * 5
    state = _prefect_state(stack, job["flow_run_id"])
    assert (state["type"], state["name"]) == ("COMPLETED", "Partial")


def test_concurrency_is_a_true_cap(stack: Stack, client: httpx.Client, site: Site) -> None:
    urls = [site.url(f"/slow/{i}?ms=150") for i in range(600)]
    jid = _submit(client, {"input": {"urls": urls}, "concurrency": 10})
    job = stack.wait_job(client, jid, FINAL, timeout=120)
    assert job["status"] == "completed"
    assert site.stats.peak <= 10  # never above the job's concurrency
    assert site.stats.peak >= 9  # and close to it when pages are slow


def test_cancel_keeps_partial_output(stack: Stack, client: httpx.Client, site: Site) -> None:
    urls = [site.url(f"/slow/{i}?ms=100") for i in range(1500)]
    jid = _submit(client, {"input": {"urls": urls}, "concurrency": 4})
    stack.wait_job(client, jid, {"running"}, timeout=60, until=lambda j: j["urls_done"] >= 30)
    r = client.delete(f"/v1/jobs/{jid}")
    assert r.status_code == 202 and r.json()["cancel_requested_at"] is not None
    job = stack.wait_job(client, jid, FINAL, timeout=60)
    assert job["status"] == "cancelled"
    assert 30 <= job["urls_done"] < job["urls_total"] == 1500
    lines = [orjson.loads(x) for x in _download(job).splitlines()]
    assert len(lines) == job["urls_done"]
    got = [x["input_index"] for x in lines]
    assert got == sorted(set(got))  # no duplicates, input order
    assert _prefect_state(stack, job["flow_run_id"])["type"] == "CANCELLED"
    again = client.delete(f"/v1/jobs/{jid}")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


def test_results_while_running_and_single_result(
    stack: Stack, client: httpx.Client, site: Site
) -> None:
    jid = _submit(
        client,
        {"input": {"url": site.url("/p/7")}, "selectors": {"title": "h1", "price": ".price"}},
    )
    job = stack.wait_job(client, jid, FINAL, timeout=60)
    assert job["status"] == "completed"
    one = client.get(f"/v1/jobs/{jid}/result").json()
    assert one["data"] == {"title": "Product 7", "price": "$259.99"}
    csv = client.get(f"/v1/jobs/{jid}/results", params={"format": "csv"})
    assert csv.status_code == 200
    rows = list(pycsv.DictReader(io.StringIO(csv.text)))
    assert [(r["url"], r["title"], r["price"]) for r in rows] == [
        (site.url("/p/7"), "Product 7", "$259.99")
    ]


def test_bad_input_through_http(stack: Stack, client: httpx.Client) -> None:
    r = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    r = client.post("/v1/jobs", json={"urls": ["http://x.test/"] * 2001})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == "urls"
    r = client.post("/v1/jobs", json={"urls": ["http://x.test/"], "concurrency": 257})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "concurrency"
    r = client.post("/v1/jobs", json={"urls": ["http://x.test/"], "output": {"format": "csv"}})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "output.format"
    assert httpx.get(f"{stack.base}/v1/jobs").status_code == 401
    # another account's job is 404, not 403
    jobs = client.get("/v1/jobs", params={"limit": 1}).json()["jobs"]
    with stack.client(stack.keys_create("other")) as c2:
        if jobs:
            assert c2.get(f"/v1/jobs/{jobs[0]['id']}").status_code == 404
            assert c2.delete(f"/v1/jobs/{jobs[0]['id']}").status_code == 404
        assert c2.get("/v1/jobs").json()["total"] == 0


def test_printed_curl_creates_a_downloadable_job(stack: Stack, client: httpx.Client) -> None:
    """The banner's curl, run as printed (no network here: the URL ends as a dns error)."""
    import subprocess

    cmd = next(i for i, line in enumerate(stack.banner.splitlines()) if "curl -s -X POST" in line)
    lines = stack.banner.splitlines()
    shell = (lines[cmd] + "\n" + lines[cmd + 1]).strip()
    out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=30)
    job = json.loads(out.stdout)
    done = stack.wait_job(client, job["id"], FINAL, timeout=60)
    assert done["status"] in {"completed", "partial"}
    assert httpx.get(done["download_url"]).status_code == 200


def test_cancel_from_prefect_ui_is_the_same_graceful_cancel(
    stack: Stack, client: httpx.Client, site: Site
) -> None:
    urls = [site.url(f"/slow/{i}?ms=100") for i in range(1000)]
    jid = _submit(client, {"input": {"urls": urls}, "concurrency": 4})
    job = stack.wait_job(
        client, jid, {"running"}, timeout=60, until=lambda j: j["urls_done"] >= 260
    )
    # what the UI's "Cancel" button does: ask the server to move the run to Cancelling
    r = httpx.post(
        f"http://127.0.0.1:{stack.prefect_port}/api/flow_runs/{job['flow_run_id']}/set_state",
        json={"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True},
    )
    assert r.status_code in (200, 201), r.text
    job = stack.wait_job(client, jid, FINAL, timeout=90)
    assert job["status"] == "cancelled"
    assert "Prefect UI" in (job["error"] or "")
    assert 250 <= job["urls_done"] < 1000
    lines = [orjson.loads(x) for x in _download(job).splitlines()]
    assert len(lines) == job["urls_done"]
    got = [x["input_index"] for x in lines]
    assert got == sorted(set(got))
    assert _prefect_state(stack, job["flow_run_id"])["type"] == "CANCELLED"


def test_flow_runs_and_chunk_processes_are_forks_of_the_warm_process(
    stack: Stack, client: httpx.Client, site: Site
) -> None:
    """``deployments/warm_start.py``: a job's flow-run process is forked from the worker's
    forkserver (not a cold ``python -m prefect.engine``), and its chunk processes are forks of
    it (not spawned interpreters). A Prefect upgrade that bypasses either fails here."""
    urls = [site.url(f"/slow/{i}?ms=60") for i in range(800)]
    jid = _submit(client, {"input": {"urls": urls}, "concurrency": 16})
    stack.wait_job(client, jid, {"running"}, timeout=60, until=lambda j: j["urls_done"] >= 50)
    worker = json.loads((stack.data_dir / "pids.json").read_text())["worker"]
    forkservers = [p for p in children(worker) if "multiprocessing.forkserver" in cmdline(p)]
    assert len(forkservers) == 1, [cmdline(p) for p in children(worker)]
    assert not [p for p in children(worker) if "prefect.engine" in cmdline(p)]
    flow_runs = children(forkservers[0])
    assert len(flow_runs) == 1  # this job's; the worker runs nothing else now
    chunk_procs = children(flow_runs[0])
    assert len(chunk_procs) == 2  # one per core (this machine: 2), both used at concurrency 16
    for pid in chunk_procs:
        assert "spawn_main" not in cmdline(pid)
        assert cmdline(pid) == cmdline(forkservers[0])  # a fork: the same command line
    job = stack.wait_job(client, jid, FINAL, timeout=120)
    assert job["status"] == "completed" and job["urls_done"] == 800
