"""One-URL job latency: POST /v1/jobs to `completed`, on the real stack (`shoal up`).

    .venv/bin/python bench/latency.py [--jobs 10]

Prints each job's POST→completed time (polled every 20 ms), the median and the split:
POST→started_at (scheduling + flow-run process start) and started_at→completed_at (the flow).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from tests.e2e.stack import Stack  # noqa: E402
from tests.sites.catalog import Site  # noqa: E402


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10)
    args = ap.parse_args()
    site = Site().start()
    # polls 50 times a second, over the per-account rate limit (SHOAL_RATE_LIMIT_PER_S, 20/s)
    stack = Stack(Path(tempfile.mkdtemp()) / "data", SHOAL_RATE_LIMIT_PER_S="0").start()
    totals, sched, flow = [], [], []
    try:
        with stack.client() as c:
            for i in range(args.jobs):
                t0 = time.time()
                jid = c.post("/v1/jobs", json={"input": {"url": site.url(f"/p/{i}")}}).json()["id"]
                posted = time.time() - t0
                while (job := c.get(f"/v1/jobs/{jid}").json())["status"] != "completed":
                    assert job["status"] in ("queued", "running"), job
                    time.sleep(0.02)
                t1 = time.time()
                totals.append(t1 - t0)
                sched.append(_ts(job["started_at"]) - t0)
                flow.append(_ts(job["completed_at"]) - _ts(job["started_at"]))
                run = httpx.get(
                    f"http://127.0.0.1:{stack.prefect_port}/api/flow_runs/{job['flow_run_id']}"
                ).json()
                # the Prefect run's own clock: created (POST) -> Running (the runner started the
                # process and the engine began) -> the job marked running (after imports)
                picked = _ts(run["start_time"]) - _ts(run["created"])
                print(
                    f"job {i}: {totals[-1]:.2f} s (POST {posted:.2f} s; to running "
                    f"{sched[-1]:.2f} s, of which run created -> Running {picked:.2f} s; "
                    f"flow {flow[-1]:.2f} s)",
                    flush=True,
                )
    finally:
        stack.stop()
        site.stop()
    print(
        f"median POST→completed {statistics.median(totals):.2f} s; "
        f"to running {statistics.median(sched):.2f} s; flow {statistics.median(flow):.2f} s"
    )


if __name__ == "__main__":
    main()
