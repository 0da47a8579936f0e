"""What a Prefect operator does to running jobs, tried on the real stack (``shoal up``), with
numbers (issue 11's failures 1-3).

    .venv/bin/python bench/operator_checks.py [--urls 300] [--cancel-at 34] [--checks 1234]

1. A cancel from the Prefect UI: a job of ``--urls`` slow pages (150 ms, concurrency 4) is
   cancelled the way the UI does it (its flow run set ``Cancelling`` through Prefect's API) once
   it has ``--cancel-at`` URLs done. Prints the URLs done before the cancel against the rows in
   the output, ``urls_done``, ``credits_used``, what the site served, and whether ``urls_done``
   ever went back while polled every 50 ms.
2. A second embedded worker (``python -m deployments.serve``) started while a job runs: prints
   whether the job kept its flow run and how often the site served each URL.
3. ``kill -9`` of the embedded worker and every process under it (flow run, chunk processes)
   mid-job (1,000 pages of 100 ms, concurrency 8, killed at 300 done): ``shoal up`` restarts
   the worker, Prefect's heartbeats mark the dead run ``Crashed``, the services resume the job.
   Prints how long after the kill it completed, whether every URL is in the output once and in
   order, and how many URLs the site served twice.
4. The same ``kill -9`` in a run Prefect's scheduler made for a Shoal schedule (issue 13: such a
   flow run creates its job itself): the schedule's run made due now, the worker tree killed
   at 300 of 1,000 done. Prints whether the job completed, every URL once and in order, and
   that the schedule still has one run (the resumed run made no second job).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.prefect_runs import due_now, prefect_api, scheduled_runs  # noqa: E402
from tests.e2e.stack import Stack, poll_until  # noqa: E402
from tests.procs import descendants  # noqa: E402
from tests.sites.catalog import Site  # noqa: E402

FINAL = {"completed", "partial", "cancelled", "failed"}


def ui_cancel(stack: Stack, site: Site, n: int, at: int) -> None:
    with stack.client() as c:
        urls = [site.url(f"/slow/{i}?ms=150") for i in range(n)]
        jid = c.post("/v1/jobs", json={"input": {"urls": urls}, "concurrency": 4}).json()["id"]
        job = stack.wait_job(
            c, jid, {"running"}, timeout=60, until=lambda j: j["urls_done"] >= at, poll=0.05
        )
        before, run = job["urls_done"], job["flow_run_id"]
        prefect = f"http://127.0.0.1:{stack.prefect_port}/api"
        t0 = time.monotonic()
        httpx.post(
            f"{prefect}/flow_runs/{run}/set_state",
            json={"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True},
        ).raise_for_status()
        seen = []
        while (job := c.get(f"/v1/jobs/{jid}").json())["status"] not in FINAL:
            seen.append(job["urls_done"])
            time.sleep(0.05)
        took = time.monotonic() - t0
    rows = [orjson.loads(x) for x in httpx.get(job["download_url"]).content.splitlines()]
    served = sum(v for k, v in site.stats.hits.items() if k.startswith("/slow/"))
    state = httpx.get(f"{prefect}/flow_runs/{run}").json()["state_type"]
    print(
        f"1. UI cancel at {before} of {n} done: job {job['status']} {took:.1f} s later, flow run "
        f"{state}; rows in the output {len(rows)} ({len({r['url'] for r in rows})} unique), "
        f"urls_done {job['urls_done']}, credits_used {job['credits_used']}, served {served}; "
        f"urls_done went back: {any(b < a for a, b in zip(seen, seen[1:], strict=False))}"
    )


def second_worker(stack: Stack, site: Site, n: int) -> None:
    site.stats.reset()
    with stack.client() as c:
        urls = [site.url(f"/slow/{i}?ms=100") for i in range(n)]
        jid = c.post("/v1/jobs", json={"input": {"urls": urls}, "concurrency": 4}).json()["id"]
        job = stack.wait_job(c, jid, {"running"}, timeout=60, until=lambda j: j["urls_done"] > 9)
        env = {
            **stack.env,
            "SHOAL_DATA_DIR": str(stack.data_dir),
            "SHOAL_SIGNING_SECRET": (stack.data_dir / "signing-secret").read_text().strip(),
            "PREFECT_API_URL": f"http://127.0.0.1:{stack.prefect_port}/api",
        }
        with open(stack.data_dir / "second-worker.log", "w") as log:
            second = subprocess.Popen(
                [sys.executable, "-m", "deployments.serve"], env=env, cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                done = stack.wait_job(c, jid, FINAL, timeout=300)
            finally:
                second.terminate()
                second.wait(30)
    hits = [site.stats.hits[f"/slow/{i}"] for i in range(n)]
    print(
        f"2. second worker: job {done['status']}, kept its flow run: "
        f"{done['flow_run_id'] == job['flow_run_id']}; the site served {sum(hits)} pages for "
        f"{n} URLs, at most {max(hits)} per URL"
    )


def _kill_mid_job(
    stack: Stack, site: Site, c: httpx.Client, jid: str, urls: list[str], label: str
) -> dict:
    """Kill -9 the worker tree once ``jid`` is 30 % done; wait for the job; print the check."""
    n = len(urls)
    job = stack.wait_job(
        c, jid, {"running"}, timeout=60, until=lambda j: j["urls_done"] >= n * 3 // 10
    )
    worker = json.loads((stack.data_dir / "pids.json").read_text())["worker"]
    tree = [worker, *descendants(worker)]
    t0 = time.monotonic()
    for pid in reversed(tree):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    done = stack.wait_job(c, jid, FINAL, timeout=300)
    took = time.monotonic() - t0
    rows = [orjson.loads(x) for x in httpx.get(done["download_url"]).content.splitlines()]
    hits = [site.stats.hits[f"/slow/{i}"] for i in range(n)]
    print(
        f"{label} kill -9 of the worker and its {len(tree) - 1} processes at {job['urls_done']} "
        f"of {n} done: job {done['status']} {took:.1f} s later on a new flow run "
        f"({done['flow_run_id'] != job['flow_run_id']}); every URL once and in order: "
        f"{[r['url'] for r in rows] == urls}; credits {done['credits_used']}; served twice "
        f"{sum(h == 2 for h in hits)}, at most {max(hits)} per URL"
    )
    return done


def kill_worker(stack: Stack, site: Site, n: int = 1000) -> None:
    site.stats.reset()
    with stack.client() as c:
        urls = [site.url(f"/slow/{i}?ms=100") for i in range(n)]
        jid = c.post("/v1/jobs", json={"input": {"urls": urls}, "concurrency": 8}).json()["id"]
        _kill_mid_job(stack, site, c, jid, urls, "3.")


def kill_scheduled_run(stack: Stack, site: Site, n: int = 1000) -> None:
    site.stats.reset()
    urls = [site.url(f"/slow/{i}?ms=100") for i in range(n)]
    job = {"input": {"urls": urls}, "concurrency": 8}
    with stack.client() as c, prefect_api(stack) as prefect:
        r = c.post("/v1/schedules", json={"name": "op-check", "interval_s": 3600, "job": job})
        r.raise_for_status()
        sid = r.json()["id"]
        run = scheduled_runs(stack, prefect, sid)[0]
        due_now(prefect, run["id"])
        first = poll_until(
            lambda: {"jobs": c.get(f"/v1/jobs?schedule_id={sid}").json()["jobs"]},
            lambda got: bool(got["jobs"]),
            60,
            "the scheduled run made no job",
            stack._logs,
        )["jobs"][0]
        _kill_mid_job(stack, site, c, first["id"], urls, "4. scheduled run:")
        got = c.get(f"/v1/schedules/{sid}").json()
        jobs = c.get(f"/v1/jobs?schedule_id={sid}").json()["jobs"]
        print(
            f"   the schedule after: runs {got['runs']}, skipped {got['skipped_runs']}, jobs "
            f"{[(j['run_number'], j['status']) for j in jobs]}; the job's first flow run was "
            f"Prefect's scheduled one: {first['flow_run_id'] == run['id']}"
        )
        c.delete(f"/v1/schedules/{sid}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--urls", type=int, default=300)
    ap.add_argument("--cancel-at", type=int, default=34)
    ap.add_argument("--checks", default="1234", help="which checks to run, e.g. 34")
    args = ap.parse_args()
    site = Site().start()
    # polls every 50 ms besides its other calls: over the per-account rate limit (20/s)
    stack = Stack(
        Path(tempfile.mkdtemp(prefix="shoal-operator-")) / "data", SHOAL_RATE_LIMIT_PER_S="0"
    ).start()
    try:
        checks = {
            "1": lambda: ui_cancel(stack, site, args.urls, args.cancel_at),
            "2": lambda: second_worker(stack, site, args.urls),
            "3": lambda: kill_worker(stack, site),
            "4": lambda: kill_scheduled_run(stack, site),
        }
        for key in args.checks:
            checks[key]()
    finally:
        stack.stop()
        site.stop()


if __name__ == "__main__":
    main()
