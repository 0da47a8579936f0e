"""Where a job's CPU goes, over time: one Shoal job on ``throughput.py``'s nginx catalog, with
every process's CPU sampled from ``/proc`` while it runs.

    .venv/bin/python bench/timeline.py [--urls 20000] [--concurrency 16] [--interval 0.1]

Prints, per sample interval, the cores busy on the machine and the cores used by each role:
``worker`` (the embedded worker), ``forksrv`` (its warm forkserver), ``flow`` (the job's flow-run
process), ``chunks`` (the chunk processes the flow run forked), ``prefect`` (Prefect server),
``api``, ``nginx`` and ``other`` (everything else, this script included). Then the averages over
the chunk phase (from the first to the last interval in which the chunk processes used more than
half a core) and the job's own timestamps, seconds after the POST.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _procs  # noqa: E402
import httpx  # noqa: E402
from throughput import FINAL, Catalog, _ts  # noqa: E402

from tests.e2e.stack import Stack  # noqa: E402

ROLES = ("worker", "forksrv", "flow", "chunks", "prefect", "api", "nginx", "other")
_DEPTH = {0: "worker", 1: "forksrv", 2: "flow", 3: "chunks"}


def _role(pid: int, table: dict[int, _procs.Proc], roots: dict[str, int]) -> str:
    if pid == roots["prefect"]:
        return "prefect"
    if pid == roots["api"]:
        return "api"
    if pid == roots["nginx"] or table[pid].cmd.startswith("nginx"):
        return "nginx"
    depth, p = 0, pid
    while p in table and p != roots["worker"] and p > 1:
        depth, p = depth + 1, table[p].ppid
    if p == roots["worker"]:
        return _DEPTH.get(depth, "chunks")
    return "other"


class _Recorder(threading.Thread):
    """Every process's own CPU seconds, every ``interval`` s, until stopped."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float, dict[int, _procs.Proc]]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.time(), _procs.system_busy(), _procs.table()))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def _rows(
    samples: list[tuple[float, float, dict[int, _procs.Proc]]], roots: dict[str, int], t0: float
) -> list[tuple[float, float, dict[str, float]]]:
    rows = []
    for (ta, busy_a, tab_a), (tb, busy_b, tab_b) in zip(samples, samples[1:], strict=False):
        dt = tb - ta
        used = dict.fromkeys(ROLES, 0.0)
        for pid, proc in tab_b.items():
            before = tab_a[pid].cpu_self if pid in tab_a else 0.0
            if proc.cpu_self > before:
                used[_role(pid, tab_b, roots)] += proc.cpu_self - before
        rows.append((ta - t0, (busy_b - busy_a) / dt, {k: v / dt for k, v in used.items()}))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--urls", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--kb", type=int, default=44, help="pad pages to this many KB")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between samples")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shoal-timeline-"))
    catalog = Catalog(tmp, args.urls, args.kb)
    stack: Stack | None = None
    try:
        catalog.start()
        urls = catalog.urls()
        stack = Stack(
            tmp / "data",
            SHOAL_MAX_INLINE_URLS=str(args.urls),
            SHOAL_MAX_PER_HOST=str(args.concurrency),
        ).start()
        pids = json.loads((tmp / "data" / "pids.json").read_text())
        roots = {name: pids[name] for name in ("worker", "prefect", "api")}
        roots["nginx"] = catalog.pid
        body = {
            "input": {"urls": urls},
            "defaults": {"selectors": {"title": "h1", "price": ".price"}},
            "concurrency": args.concurrency,
            "output": {"format": "parquet"},
        }
        recorder = _Recorder(args.interval)
        recorder.start()
        time.sleep(3 * args.interval)
        with stack.client() as client:
            client.timeout = httpx.Timeout(300)
            t0 = time.time()
            r = client.post("/v1/jobs", json=body)
            r.raise_for_status()
            job = stack.wait_job(client, r.json()["id"], FINAL, 1800, poll=0.25)
        time.sleep(0.5)
        recorder.stop()
    finally:
        if stack is not None:
            stack.stop()
        catalog.stop()

    rows = _rows(recorder.samples, roots, t0)
    print(f"{'t':>6} {'busy':>5} " + " ".join(f"{r:>7}" for r in ROLES))
    for t, busy, used in rows:
        print(f"{t:6.2f} {busy:5.2f} " + " ".join(f"{used[r]:7.2f}" for r in ROLES))
    phase = [i for i, (_, _, used) in enumerate(rows) if used["chunks"] > 0.5]
    if phase:
        inside = rows[phase[0] : phase[-1] + 1]
        mean = {r: sum(u[r] for _, _, u in inside) / len(inside) for r in ROLES}
        busy = sum(b for _, b, _ in inside) / len(inside)
        print(
            f"chunk phase {inside[0][0]:.2f}-{inside[-1][0] + args.interval:.2f} s, cores: busy "
            f"{busy:.2f}, " + ", ".join(f"{r} {mean[r]:.2f}" for r in ROLES)
        )
    started, completed = _ts(job["started_at"]) - t0, _ts(job["completed_at"]) - t0
    print(
        f"job {job['status']}: started {started:.2f} s, completed {completed:.2f} s after the "
        f"POST; {args.urls / (completed - started):,.0f} pages/s started -> completed"
    )
    return 0 if job["status"] == "completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
