"""Issue 12 item 9 on the real stack (``shoal up``): one account floods
``POST /v1/jobs/{id}/retry`` while another creates jobs.

    .venv/bin/python bench/retry_flood.py [--rate 35] [--seconds 10]

Account A's job has URLs that all fail (a closed port on 127.0.0.1), so it can be retried. A
then sends retries at ``--rate`` per second for ``--seconds`` from 4 threads, while account B
creates a 5-URL job of a local catalog site every 2 s. Prints A's answers by status (a ``429``
split into the rate limit's and the plan's ``max_concurrent_jobs``), B's request latencies,
and, once every job ended, each account's jobs by final status: none should be ``failed``.
Before issue 12 the same flood made Prefect's SQLite answer "database is locked": 3 other jobs
ended ``failed`` and requests took over 30 s.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from tests.e2e.stack import Stack  # noqa: E402
from tests.net import free_port  # noqa: E402
from tests.sites.catalog import Site  # noqa: E402

FINAL = {"completed", "partial", "cancelled", "failed"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=35.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    site = Site().start()
    stack = Stack(Path(tempfile.mkdtemp()) / "data").start()
    key_b = stack.keys_create("other")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every URL errors
    try:
        with stack.client() as a, stack.client(key_b) as b:
            first = a.post("/v1/jobs", json={"input": {"urls": [f"{dead}/{i}" for i in range(5)]}})
            parent = stack.wait_job(a, first.json()["id"], {"partial"})["id"]
            answers: collections.Counter[str] = collections.Counter()
            a_lat: list[float] = []
            lock = threading.Lock()
            stop_at = time.monotonic() + args.seconds
            gap = 4 / args.rate

            def flood() -> None:
                with stack.client() as c:
                    nxt = time.monotonic()
                    while time.monotonic() < stop_at:
                        t = time.perf_counter()
                        try:
                            r = c.post(f"/v1/jobs/{parent}/retry")
                        except httpx.TimeoutException:
                            kind = "no answer in 30 s"
                        else:
                            kind = str(r.status_code)
                            if r.status_code == 429:
                                kind += " rate" if "per second" in r.json()["detail"] else " plan"
                        took = time.perf_counter() - t
                        with lock:
                            answers[kind] += 1
                            a_lat.append(took)
                        nxt += gap
                        time.sleep(max(0.0, nxt - time.monotonic()))

            threads = [threading.Thread(target=flood) for _ in range(4)]
            for t in threads:
                t.start()
            b_jobs, b_lat, b_timeouts = [], [], 0
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                urls = [site.url(f"/p/{i}") for i in range(5)]
                try:
                    r = b.post("/v1/jobs", json={"input": {"urls": urls}})
                    assert r.status_code == 202, r.text
                    b_jobs.append(r.json()["id"])
                except httpx.TimeoutException:
                    b_timeouts += 1
                b_lat.append(time.perf_counter() - t)
                t = time.perf_counter()
                try:
                    assert b.get("/v1/jobs").status_code == 200
                except httpx.TimeoutException:
                    b_timeouts += 1
                b_lat.append(time.perf_counter() - t)
                time.sleep(2)
            for t in threads:
                t.join()
            print(f"A: {sum(answers.values())} retries in {args.seconds:.0f} s: {dict(answers)}")
            print(
                f"A latency s: median {statistics.median(a_lat):.3f} max {max(a_lat):.3f}; "
                f"B latency s: median {statistics.median(b_lat):.3f} max {max(b_lat):.3f}, "
                f"{b_timeouts} of {len(b_lat)} with no answer in 30 s"
            )
            for name, c in (("A", a), ("B", b)):
                deadline = time.monotonic() + 300
                while True:
                    jobs = c.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
                    if all(j["status"] in FINAL for j in jobs) or time.monotonic() > deadline:
                        break
                    time.sleep(1)
                by = collections.Counter(j["status"] for j in jobs)
                failed = [j["error"] for j in jobs if j["status"] == "failed"]
                print(f"{name}: {len(jobs)} jobs, {dict(by)}; failed: {failed}")
    finally:
        stack.stop()
        site.stop()


if __name__ == "__main__":
    main()
