"""End-to-end throughput of one Shoal job (REST in, Parquet out) against bare aiohttp loops.

    .venv/bin/python bench/throughput.py [--urls 20000] [--quick] [--concurrency 16,256] [--keep]

One run, on one nginx-served catalog of N product pages (``tests.sites.catalog.product_html``
padded to ~44 KB with filler paragraphs inside ``<body>``, as ``bench/fetch_engines.py`` does):

1. Baselines at each concurrency C over the same N URLs (``bench/_rawloop.py``): a bare
   aiohttp + selectolax loop (fetch, parse ``h1`` and ``.price`` text, check both) in one process
   with C in flight, and the same loop in two processes (URLs split in halves, C/2 each): the
   issue's reference. Scrapy is not installed here: no Scrapy row.
2. Shoal: the real stack (``tests.e2e.stack.Stack`` -> ``shoal up``) with the operator's inline
   limit raised to N (``SHOAL_MAX_INLINE_URLS``) so ONE job holds all N URLs, and the per-host
   cap raised to the largest C (``SHOAL_MAX_PER_HOST``; its default 64 would otherwise cap C=256
   to 64 in flight on the one nginx host). At each C, one after the other on the same stack:
   POST one job ``{"input": {"urls": [...]}, "defaults": {"selectors": {"title": "h1",
   "price": ".price"}}, "concurrency": C, "output": {"format": "parquet"}}``, poll it every
   0.1 s to ``completed``, download the Parquet and check rows = N, every title and every price.
   Rates: N / (``completed_at`` - ``started_at``) (the job) and N / (POST -> completed seen).

Resources. Baselines: each process's ``getrusage`` (CPU over the loop, ``ru_maxrss``). Shoal:
CPU of each process tree from ``/proc`` (utime+stime+cutime+cstime, so reaped flow-run
processes count in the worker) from just before the POST until the job's flow-run process has
exited; the worker tree (which holds the flow-run processes), the Prefect server and the API
separately. Memory: the worker's descendants (its forkserver, the flow-run processes forked
from it and their chunk processes), sampled every 0.2 s: the peak of their summed PSS (the
table's column: pages a fork shares with its parent count once) and of their summed RSS (which
counts shared pages in every process), and the largest ``VmHWM``. The busiest process's
CPU / wall over the job's ``started_at -> completed_at`` says whether one core is the limit.
"Machine busy" is all CPU on the machine in the window (``/proc/stat``): other sessions' load
shows up as the difference.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _procs  # noqa: E402
import _rawloop  # noqa: E402
import httpx  # noqa: E402
from _nginx import Nginx, find_or_install  # noqa: E402
from _procs import every  # noqa: E402

from tests.e2e.stack import Stack  # noqa: E402
from tests.sites.catalog import price_of, product_html  # noqa: E402

FINAL = {"completed", "partial", "cancelled", "failed"}
_FILLER = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>"
MB = 1024 * 1024


def page(n: int, kb: int = 44) -> str:
    """Product page ``n`` padded with paragraphs inside ``<body>`` to about ``kb`` KB."""
    html = product_html(n)
    missing = kb * 1024 - len(html)
    if missing <= 0:
        return html
    return html.replace("</body>", _FILLER * (missing // len(_FILLER)) + "</body>")


def _ts(value: str | None) -> float:
    if not value:
        return float("nan")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# ---------------------------------------------------------------- catalog


class Catalog:
    def __init__(self, tmp: Path, n: int, kb: int) -> None:
        self.tmp, self.n, self.kb = tmp, n, kb
        self.nginx: Nginx | None = None
        self.page_bytes = 0

    def start(self) -> Catalog:
        binary = find_or_install()
        if binary is None:
            raise SystemExit("nginx is needed (apt-get install nginx-light)")
        www = self.tmp / "www"
        pages = www / "p"
        pages.mkdir(parents=True)
        t0 = time.perf_counter()
        total = 0
        for i in range(self.n):
            data = page(i, self.kb).encode()
            total += len(data)
            (pages / str(i)).write_bytes(data)
        self.page_bytes = total // self.n
        # nginx's worker runs as nobody when we are root: the folders must be readable
        for p in (self.tmp, www, pages):
            os.chmod(p, 0o755)
        print(
            f"catalog: wrote {self.n} pages of {self.page_bytes / 1024:.1f} KB in "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        self.nginx = Nginx(binary, www, self.tmp / "nginx").start("/p/0")
        return self

    @property
    def pid(self) -> int:
        assert self.nginx and self.nginx.proc
        return self.nginx.proc.pid

    def urls(self) -> list[str]:
        assert self.nginx
        return [f"{self.nginx.base}/p/{i}" for i in range(self.n)]

    def stop(self) -> None:
        if self.nginx:
            self.nginx.stop()


# ---------------------------------------------------------------- baselines


def run_baseline(urls: list[str], c: int, processes: int, nginx_pid: int) -> dict[str, Any]:
    cpu0, busy0 = _procs.tree_cpu({"nginx": nginx_pid}), _procs.system_busy()
    res = _rawloop.run(urls, c, processes)
    res["nginx_cpu"] = _procs.tree_cpu({"nginx": nginx_pid})["nginx"] - cpu0["nginx"]
    res["busy"] = _procs.system_busy() - busy0
    if res["bad"]:
        print(f"  baseline errors: {res['errors']}", flush=True)
    return res


# ---------------------------------------------------------------- shoal


def _check_parquet(content: bytes, urls: list[str]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(content))
    names = set(table.column_names)
    tcol = "title" if "title" in names else "data_title"
    pcol = "price" if "price" in names else "data_price"
    rows = table.select(["input_index", "status", tcol, pcol]).to_pylist()
    wrong, seen = 0, set()
    for row in rows:
        i = row["input_index"]
        seen.add(i)
        n = _rawloop.page_no(urls[i])
        value = _rawloop.parse_price(row[pcol])
        if (
            row["status"] != "ok"
            or row[tcol] != f"Product {n}"
            or value is None
            or abs(value - price_of(n)) >= 0.005
        ):
            wrong += 1
    return {"rows": len(rows), "distinct": len(seen), "wrong": wrong, "bytes": len(content)}


def _flow_runs(worker_pid: int, before: set[int]) -> list[int]:
    procs = _procs.table()
    return [p for p in _procs.descendants(procs, worker_pid) if p not in before]


def run_shoal_job(
    stack: Stack,
    client: httpx.Client,
    urls: list[str],
    c: int,
    roots: dict[str, int],
    sampler: _procs.Sampler,
    timeout: float,
) -> dict[str, Any]:
    body = {
        "name": f"bench-c{c}",
        "input": {"urls": urls},
        "defaults": {"selectors": {"title": "h1", "price": ".price"}},
        "concurrency": c,
        "output": {"format": "parquet"},
    }
    payload = json.dumps(body).encode()
    before = set(_procs.descendants(_procs.table(), roots["worker"]))
    sampler.reset_peaks()
    cpu0, busy0, self0 = _procs.tree_cpu(roots), _procs.system_busy(), _self_cpu()
    t_post = time.time()
    r = client.post("/v1/jobs", content=payload, headers={"Content-Type": "application/json"})
    t_accepted = time.time()
    if r.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs -> {r.status_code}: {r.text[:500]}")
    job_id = r.json()["id"]
    job = stack.wait_job(
        client,
        job_id,
        FINAL,
        timeout,
        poll=0.1,
        on_poll=every(
            10, lambda j: f"  ... {j['status']} {json.dumps(j.get('progress', ''))[:120]}"
        ),
    )
    t_seen = time.time()
    # the flow run's process still finishes (final state, exit): wait for it, its CPU counts
    exit_deadline = time.monotonic() + 60
    while _flow_runs(roots["worker"], before) and time.monotonic() < exit_deadline:
        time.sleep(0.1)
    t_exited = time.time()
    cpu = {k: v - cpu0[k] for k, v in _procs.tree_cpu(roots).items()}
    busy = _procs.system_busy() - busy0
    self_cpu = _self_cpu() - self0
    time.sleep(0.3)  # one more sample so the sampler's tracks end
    tracks = sampler.new_since(t_post - 0.5)
    with sampler.lock:
        peak_tree = sampler.peak["worker"]
        peak_pss = sampler.peak_pss["worker"]

    d0 = time.perf_counter()
    dl = client.get(job["download_url"], headers={"Authorization": ""}, timeout=300)
    dl.raise_for_status()
    download_s = time.perf_counter() - d0
    check = _check_parquet(dl.content, urls)

    started, completed = _ts(job["started_at"]), _ts(job["completed_at"])
    n = len(urls)
    # the busiest new descendant of the worker (a chunk process when the job uses them)
    main = max(tracks, key=lambda t: t.samples[-1][1] - t.samples[0][1], default=None)
    util = None
    if main is not None:
        used, wall = main.cpu_between(started, completed)
        util = used / wall if wall else None
    return {
        "c": c,
        "job": job,
        "status": job["status"],
        "post_s": t_accepted - t_post,
        "queue_s": started - t_post,
        "run_s": completed - started,
        "seen_s": t_seen - t_post,
        "tail_s": t_exited - t_seen,
        "rate_job": n / (completed - started),
        "rate_seen": n / (t_seen - t_post),
        "cpu": cpu,
        "self_cpu": self_cpu,
        "busy": busy,
        "window_s": t_exited - t_post,
        "peak_tree": peak_tree,
        "peak_pss": peak_pss,
        "hwm": max((t.hwm for t in tracks), default=0),
        "flow_procs": [(t.pid, t.cmd, t.samples[-1][1] - t.samples[0][1], t.hwm) for t in tracks],
        "main_util": util,
        "download_s": download_s,
        "check": check,
    }


# ---------------------------------------------------------------- report


def _row(name: str, rate: float, cpu: float, n: int, rss: int, extra: str = "") -> str:
    return f"| {name} | {rate:,.0f} | {cpu / n * 1000:.2f} | {rss / MB:,.0f} | {extra} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--urls", type=int, default=20_000)
    ap.add_argument("--quick", action="store_true", help="2,000 URLs")
    ap.add_argument("--concurrency", default="16,256", help="comma-separated levels")
    ap.add_argument("--kb", type=int, default=44, help="pad pages to this many KB")
    ap.add_argument("--timeout", type=float, default=1800, help="deadline per job (s)")
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (logs, outputs)")
    args = ap.parse_args()
    n = 2_000 if args.quick else args.urls
    levels = [int(x) for x in args.concurrency.split(",")]

    import aiohttp
    import prefect

    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.split()
    print(
        f"throughput: {n} URLs, concurrency {levels}, {os.cpu_count()} CPUs, "
        f"{platform.platform()}, python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, "
        f"prefect {prefect.__version__}, commit {commit}"
        + (f" (modified: {' '.join(dirty[1::2])})" if dirty else ""),
        flush=True,
    )
    print(f"date {datetime.now(UTC).isoformat(timespec='seconds')}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    catalog = Catalog(tmp, n, args.kb)
    base: dict[tuple[int, int], dict[str, Any]] = {}
    shoal: dict[int, dict[str, Any]] = {}
    startup = 0.0
    stack: Stack | None = None
    sampler: _procs.Sampler | None = None
    try:
        catalog.start()
        urls = catalog.urls()
        print(f"catalog: nginx (worker_processes 1) at {catalog.nginx.base}", flush=True)  # type: ignore[union-attr]

        if not args.skip_baselines:
            for c in levels:
                for procs in (1, 2):
                    res = run_baseline(urls, c, procs, catalog.pid)
                    base[(c, procs)] = res
                    print(
                        f"baseline aiohttp+selectolax {procs} proc @ {c}: {res['rate']:,.0f} "
                        f"pages/s ({res['elapsed']:.1f} s, ok {res['ok']}, bad {res['bad']}), "
                        f"CPU {res['cpu']:.1f} s, RSS {res['rss'] / MB:.0f} MB, "
                        f"nginx CPU {res['nginx_cpu']:.1f} s, machine busy {res['busy']:.1f} s",
                        flush=True,
                    )

        stack = Stack(
            tmp / "data",
            SHOAL_MAX_INLINE_URLS=str(n),
            SHOAL_MAX_PER_HOST=str(max(levels)),
        )
        t0 = time.perf_counter()
        stack.start()
        startup = time.perf_counter() - t0
        pids = json.loads((tmp / "data" / "pids.json").read_text())
        roots = {name: pids[name] for name in ("worker", "prefect", "api")}
        roots["nginx"] = catalog.pid
        print(f"shoal: stack up in {startup:.1f} s at {stack.base}", flush=True)
        sampler = _procs.Sampler({"worker": roots["worker"]}, 0.2)
        sampler.start()
        with stack.client() as client:
            client.timeout = httpx.Timeout(300)
            for c in levels:
                res = run_shoal_job(stack, client, urls, c, roots, sampler, args.timeout)
                shoal[c] = res
                ck = res["check"]
                util = res["main_util"]
                print(
                    f"shoal @ {c}: {res['status']}, job {res['rate_job']:,.0f} pages/s "
                    f"(run {res['run_s']:.1f} s), POST->completed seen {res['rate_seen']:,.0f} "
                    f"pages/s ({res['seen_s']:.1f} s; POST {res['post_s']:.2f} s, "
                    f"POST->started {res['queue_s']:.1f} s); rows {ck['rows']}/{n}, "
                    f"wrong {ck['wrong']}; CPU s "
                    + ", ".join(f"{k} {v:.1f}" for k, v in res["cpu"].items())
                    + f"; machine busy {res['busy']:.1f} s in {res['window_s']:.1f} s; "
                    f"worker tree peak PSS {res['peak_pss'] / MB:.0f} MB, RSS "
                    f"{res['peak_tree'] / MB:.0f} MB (VmHWM {res['hwm'] / MB:.0f} MB); busiest "
                    "process CPU/wall in the run " + (f"{util:.2f}" if util is not None else "n/a"),
                    flush=True,
                )
                for pid, cmd, used, hwm in res["flow_procs"]:
                    print(
                        f"    flow-run pid {pid} ({cmd}): CPU {used:.1f} s, VmHWM {hwm / MB:.0f} MB"
                    )
    finally:
        # each step on its own: a failing one must not leave the stack or nginx running
        for step in (sampler and sampler.stop, stack and stack.stop, catalog.stop):
            if step:
                try:
                    step()
                except Exception as exc:  # noqa: BLE001
                    print(f"teardown: {step} failed: {exc!r}", file=sys.stderr)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"== {n} pages of {catalog.page_bytes / 1024:.1f} KB, nginx on loopback, "
        f"{os.cpu_count()} CPUs; stack start-up {startup:.1f} s"
    )
    print()
    print("| run | pages/s | CPU s / 1,000 pages | peak RSS (Shoal: PSS) MB | notes |")
    print("|---|---|---|---|---|")
    for c in levels:
        for procs in (1, 2):
            if (c, procs) in base:
                b = base[(c, procs)]
                print(
                    _row(
                        f"aiohttp+selectolax, {procs} process{'es' if procs > 1 else ''}, C={c}",
                        b["rate"],
                        b["cpu"],
                        n,
                        b["rss"],
                        f"{b['elapsed']:.1f} s; nginx {b['nginx_cpu'] / n * 1000:.2f} CPU s/1k; "
                        f"machine busy {b['busy']:.1f} s",
                    )
                )
        if c in shoal:
            s = shoal[c]
            cpu = {k: v / n * 1000 for k, v in s["cpu"].items()}  # CPU s per 1,000 pages
            print(
                _row(
                    f"Shoal job, C={c} (started→completed)",
                    s["rate_job"],
                    s["cpu"]["worker"],
                    n,
                    s["peak_pss"],
                    f"run {s['run_s']:.1f} s; summed RSS {s['peak_tree'] / MB:.0f} MB; "
                    f"POST→completed seen {s['rate_seen']:,.0f} pages/s "
                    f"({s['seen_s']:.1f} s); CPU s/1k: Prefect server {cpu['prefect']:.2f}, "
                    f"API {cpu['api']:.2f}, nginx {cpu['nginx']:.2f}; busiest "
                    f"process CPU/wall {s['main_util'] or 0:.2f}; VmHWM {s['hwm'] / MB:.0f} MB; "
                    f"machine busy {s['busy']:.1f} s in {s['window_s']:.1f} s",
                )
            )
    print()
    ok = True
    for c in levels:
        if c in shoal and (c, 2) in base:
            r_job = shoal[c]["rate_job"] / base[(c, 2)]["rate"]
            r_seen = shoal[c]["rate_seen"] / base[(c, 2)]["rate"]
            print(
                f"ratio Shoal job / two-process baseline @ C={c}: {r_job:.2f} "
                f"(POST→completed: {r_seen:.2f})  target >= 0.8: {'yes' if r_job >= 0.8 else 'NO'}"
            )
    if len(levels) >= 2 and levels[0] in shoal and levels[-1] in shoal:
        lo, hi = shoal[levels[0]], shoal[levels[-1]]
        print(
            f"flatness Shoal C={levels[-1]} / C={levels[0]}: {hi['rate_job'] / lo['rate_job']:.2f} "
            f"(POST→completed: {hi['rate_seen'] / lo['rate_seen']:.2f})"
        )
    for c, s in shoal.items():
        ck = s["check"]
        if s["status"] != "completed" or ck["rows"] != n or ck["distinct"] != n or ck["wrong"]:
            ok = False
            print(f"CHECK FAILED @ C={c}: status {s['status']}, {ck}", file=sys.stderr)
    for (c, procs), b in base.items():
        if b["ok"] != n:
            ok = False
            print(f"BASELINE CHECK FAILED @ C={c}, {procs} proc: {b['errors']}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
