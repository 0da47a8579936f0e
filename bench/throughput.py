"""End-to-end throughput: Shoal (REST -> Prefect flow runs -> parquet) against a bare fetch loop.

    python bench/throughput.py [--urls 20000] [--concurrency 64] [--quick]

One run:
1. writes N product pages (``tests.sites.catalog.product_html``, ~44 KB each) to a temp folder
   and serves them with nginx on 127.0.0.1 (installed with apt-get when missing and root; the
   Python catalog site otherwise, with a warning: it costs ~10x nginx per page and shares the CPU);
2. baseline: one ``httpx.AsyncClient`` with C requests in flight, fetch + selectolax parse of
   ``h1`` and ``.price``, over the same URLs;
3. Shoal: starts the real stack (``tests.e2e.stack.Stack``, temp data folder), submits the URLs
   as jobs of <= 1,000 inline URLs (the contract's inline limit), all up front, each with
   ``concurrency`` C; waits for all, downloads every parquet output and checks rows and values.
   The rate is N / (first POST -> last job's ``completed_at``). Per-job times come from the
   job's ``created_at``/``started_at``/``completed_at``.

Why many jobs of 1,000 rather than one big upload: the inline limit is what callers hit first,
and many jobs at once is the load that exercises the worker's flow-run limit
(``SHOAL_WORKER_MAX_JOBS``, default 4) and the per-job fixed cost (flow-run start). The rate
is therefore "URLs/s of the service under a queue of jobs", not the speed of one job.

CPU: ``getrusage(RUSAGE_SELF)`` for this process per phase; for the stack, utime+stime of every
process in each component's tree read from ``/proc`` before and after the measured window
(reaped flow-run processes show up in their parent's cutime/cstime); ``RUSAGE_CHILDREN`` after
the stack stops gives the whole stack's life including start-up and shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import io
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
from _nginx import Nginx, find_or_install  # noqa: E402
from selectolax.lexbor import LexborHTMLParser as HTMLParser  # noqa: E402

from tests.e2e.stack import Stack  # noqa: E402
from tests.sites.catalog import Site, price_of, product_html  # noqa: E402

JOB_MAX_URLS = 1_000
FINAL = {"completed", "partial", "cancelled", "failed"}
TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- CPU accounting


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def system_busy() -> float:
    """CPU seconds all cores spent busy since boot (every process, ours or not)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def _procs() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, utime+stime+cutime+cstime in seconds) for every live process."""
    out: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = Path(f"/proc/{entry}/stat").read_text()
            fields = raw[raw.rindex(")") + 2 :].split()
            # fields[0] is state (field 3); utime..cstime are fields 14..17
            cpu = sum(int(x) for x in fields[11:15]) / TICK
            out[int(entry)] = (int(fields[1]), cpu)
    return out


def tree_cpu(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process tree (live processes plus reaped children)."""
    procs = _procs()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    result = {}
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            if pid in procs:
                total += procs[pid][1]
                todo.extend(kids.get(pid, []))
        result[name] = total
    return result


def _diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


# ---------------------------------------------------------------- catalog


def write_catalog(root: Path, n: int) -> None:
    pages = root / "p"
    pages.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (pages / str(i)).write_text(product_html(i), encoding="utf-8")


class Catalog:
    """nginx over the written pages, or the Python catalog site as the fallback."""

    def __init__(self, tmp: Path, n: int) -> None:
        self.tmp, self.n = tmp, n
        self.nginx: Nginx | None = None
        self.site: Site | None = None
        self.kind = ""

    def start(self) -> Catalog:
        binary = find_or_install()
        if binary:
            t0 = time.perf_counter()
            www = self.tmp / "www"
            write_catalog(www, self.n)
            # nginx's worker runs as nobody when we are root: the temp folder must be readable
            for p in (self.tmp, www, www / "p"):
                os.chmod(p, 0o755)
            print(f"catalog: wrote {self.n} pages in {time.perf_counter() - t0:.1f} s")
            try:
                self.nginx = Nginx(binary, www, self.tmp / "nginx").start("/p/0")
                self.kind = f"nginx ({binary}, worker_processes 1)"
                return self
            except RuntimeError as exc:
                warnings.warn(
                    f"nginx failed ({exc}); falling back to the Python site", stacklevel=1
                )
        else:
            warnings.warn(
                "nginx is not installed and cannot be installed here: serving the catalog with "
                "the Python site (tests.sites.catalog.Site). It costs ~10x nginx per page and "
                "competes with the client for CPU, so both rates will be low.",
                stacklevel=1,
            )
        self.site = Site().start()
        self.kind = "python catalog site (uvicorn, fallback)"
        return self

    @property
    def base(self) -> str:
        if self.nginx:
            return self.nginx.base
        assert self.site is not None
        return self.site.url("")

    @property
    def pid(self) -> int | None:
        if self.nginx and self.nginx.proc:
            return self.nginx.proc.pid
        return None  # the Python site runs inside this process

    def urls(self) -> list[str]:
        return [f"{self.base}/p/{i}" for i in range(self.n)]

    def stop(self) -> None:
        if self.nginx:
            self.nginx.stop()
        if self.site:
            self.site.stop()


# ---------------------------------------------------------------- baseline


async def _baseline(urls: list[str], concurrency: int) -> tuple[float, int, int]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for u in urls:
        queue.put_nowait(u)
    ok = bad = 0
    errors: collections.Counter[str] = collections.Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal ok, bad
            while True:
                try:
                    url = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    r = await client.get(url)
                    tree = HTMLParser(r.text)
                    h1, price = tree.css_first("h1"), tree.css_first(".price")
                    n = int(url.rsplit("/", 1)[1])
                    if (
                        r.status_code == 200
                        and h1 is not None
                        and h1.text() == f"Product {n}"
                        and price is not None
                        and price.text()
                    ):
                        ok += 1
                    else:
                        bad += 1
                        errors[f"http {r.status_code} / parse"] += 1
                except httpx.HTTPError as exc:
                    bad += 1
                    errors[type(exc).__name__] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0, ok, bad, errors


def run_baseline(urls: list[str], concurrency: int, catalog_pid: int | None) -> dict[str, Any]:
    roots = {"catalog": catalog_pid} if catalog_pid else {}
    c0, t0, s0 = _cpu_self(), tree_cpu(roots), system_busy()
    elapsed, ok, bad, errors = asyncio.run(_baseline(urls, concurrency))
    cpu = {"bench (self)": _cpu_self() - c0, **_diff(tree_cpu(roots), t0)}
    cpu["other processes"] = system_busy() - s0 - sum(cpu.values())
    return {
        "elapsed": elapsed,
        "ok": ok,
        "bad": bad,
        "errors": dict(errors),
        "rate": len(urls) / elapsed,
        "cpu": cpu,
    }


# ---------------------------------------------------------------- shoal


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _check_output(client: httpx.Client, job: dict[str, Any], urls: list[str]) -> dict[str, int]:
    import pyarrow.parquet as pq

    r = client.get(job["download_url"], headers={"Authorization": ""})
    r.raise_for_status()
    cols = ["input_index", "status", "name", "price", "error_code"]
    rows = pq.read_table(io.BytesIO(r.content), columns=cols).to_pylist()
    wrong = 0
    codes: collections.Counter[str] = collections.Counter(
        row["error_code"] for row in rows if row["status"] != "ok"
    )
    for row in rows:
        n = int(urls[row["input_index"]].rsplit("/", 1)[1])
        if (
            row["status"] != "ok"
            or row["name"] != f"Product {n}"
            or row["price"] is None
            or abs(row["price"] - price_of(n)) > 0.005
        ):
            wrong += 1
    return {"rows": len(rows), "wrong": wrong, "bytes": len(r.content), "codes": codes}


def _list_jobs(client: httpx.Client) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        page = client.get("/v1/jobs", params={"limit": 100, "offset": offset})
        page.raise_for_status()
        body = page.json()
        for j in body["jobs"]:
            jobs[j["id"]] = j
        offset += len(body["jobs"])
        if not body["jobs"] or offset >= body["total"]:
            return jobs


def run_shoal(
    urls: list[str], concurrency: int, data_dir: Path, timeout: float, catalog_pid: int | None
) -> dict[str, Any]:
    batches = [urls[i : i + JOB_MAX_URLS] for i in range(0, len(urls), JOB_MAX_URLS)]
    stack = Stack(data_dir)
    t_up = time.perf_counter()
    try:
        stack.start()
        startup = time.perf_counter() - t_up
        print(f"shoal: stack up in {startup:.1f} s ({stack.base})")
        import json

        pids = json.loads((data_dir / "pids.json").read_text())
        roots = {n: pids[n] for n in ("prefect", "worker", "api")}
        if catalog_pid:
            roots["catalog"] = catalog_pid
        with stack.client() as client:
            client.timeout = httpx.Timeout(120)
            cpu0_self, cpu0_tree, sys0 = _cpu_self(), tree_cpu(roots), system_busy()
            t_first_post = time.time()
            p0 = time.perf_counter()
            ids: list[str] = []
            for i, batch in enumerate(batches):
                body = {
                    "name": f"bench-{i:04d}",
                    "input": {"urls": batch},
                    "defaults": {"extract": {"name": "string", "price": "number"}},
                    "concurrency": concurrency,
                    "output": {"format": "parquet"},
                }
                while True:
                    r = client.post("/v1/jobs", json=body)
                    if r.status_code != 429:
                        break
                    time.sleep(float(r.headers.get("Retry-After", "1")))
                if r.status_code != 202:
                    raise RuntimeError(f"POST /v1/jobs -> {r.status_code}: {r.text[:500]}")
                ids.append(r.json()["id"])
            submit_s = time.perf_counter() - p0
            print(f"shoal: submitted {len(ids)} jobs in {submit_s:.2f} s")

            pending, done = set(ids), {}
            deadline = time.monotonic() + timeout
            last_print = 0.0
            while pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(pending)} jobs not final after {timeout:.0f} s")
                if stack.proc and stack.proc.poll() is not None:
                    raise RuntimeError("shoal up died:\n" + stack._logs())
                for jid, job in _list_jobs(client).items():
                    if jid in pending and job["status"] in FINAL:
                        pending.discard(jid)
                        done[jid] = job
                if time.monotonic() - last_print > 10:
                    last_print = time.monotonic()
                    print(f"shoal: {len(done)}/{len(ids)} jobs final ...", flush=True)
                time.sleep(0.5)
            observed_end = time.time()
            cpu_self = _cpu_self() - cpu0_self
            # let the flow-run processes exit and be reaped so their CPU reaches the worker
            time.sleep(3)
            cpu_tree = _diff(tree_cpu(roots), cpu0_tree)
            others = system_busy() - sys0 - cpu_self - sum(cpu_tree.values())

            d0 = time.perf_counter()
            checks = {
                jid: _check_output(client, done[jid], batches[i]) for i, jid in enumerate(ids)
            }
            download_s = time.perf_counter() - d0
        return {
            "startup": startup,
            "submit_s": submit_s,
            "t_first_post": t_first_post,
            "observed_end": observed_end,
            "jobs": [done[j] for j in ids],
            "checks": [checks[j] for j in ids],
            "download_s": download_s,
            "cpu": {"bench (self, submit+poll)": cpu_self, **cpu_tree, "other processes": others},
        }
    finally:
        stack.stop()


# ---------------------------------------------------------------- report


def _stats(xs: list[float]) -> str:
    xs = sorted(xs)
    if not xs:
        return "n/a"
    med = xs[len(xs) // 2]
    return f"min {xs[0]:.2f}  median {med:.2f}  max {xs[-1]:.2f}"


def _max_jobs() -> int:
    from shoal.settings import Settings

    return Settings().worker_max_jobs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--urls", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="2,000 URLs")
    ap.add_argument("--timeout", type=float, default=3600, help="Deadline for all jobs (s).")
    ap.add_argument("--keep", action="store_true", help="Keep the temp folder (logs, outputs).")
    args = ap.parse_args()
    n = 2_000 if args.quick else args.urls
    c = args.concurrency

    print(
        f"throughput: {n} URLs, concurrency {c}, {os.cpu_count()} CPUs, "
        f"python {sys.version.split()[0]}, httpx {httpx.__version__}"
    )
    print(
        f"shoal: SHOAL_WORKER_MAX_JOBS={_max_jobs()} (flow runs at once), "
        f"SHOAL_MAX_PER_HOST={os.environ.get('SHOAL_MAX_PER_HOST', '64 (default)')}, "
        f"jobs of <= {JOB_MAX_URLS} URLs"
    )
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    catalog = Catalog(tmp, n)
    children0 = _cpu_children()
    try:
        catalog.start()
        print(f"catalog: {catalog.kind} at {catalog.base}")
        urls = catalog.urls()

        base = run_baseline(urls, c, catalog.pid)
        print(
            f"baseline: {base['rate']:.0f} URLs/s ({n} in {base['elapsed']:.1f} s, "
            f"{base['ok']} ok, {base['bad']} bad)"
        )
        if base["errors"]:
            print(f"baseline errors: {base['errors']}")
        print("baseline CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in base["cpu"].items()))

        sh = run_shoal(urls, c, tmp / "data", args.timeout, catalog.pid)
        stack_cpu_total = _cpu_children() - children0
    finally:
        catalog.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")

    jobs, checks = sh["jobs"], sh["checks"]
    statuses = {j["status"] for j in jobs}
    completed_ts = [_ts(j["completed_at"]) or 0.0 for j in jobs]
    end_server = max(completed_ts)
    wall = end_server - sh["t_first_post"]
    wall_observed = sh["observed_end"] - sh["t_first_post"]
    rate = n / wall
    run_s = [(_ts(j["completed_at"]) or 0) - (_ts(j["started_at"]) or 0) for j in jobs]
    wait_s = [(_ts(j["started_at"]) or 0) - (_ts(j["created_at"]) or 0) for j in jobs]
    rows = sum(ch["rows"] for ch in checks)
    wrong = sum(ch["wrong"] for ch in checks)

    print()
    print(f"== results: {n} URLs, concurrency {c}, catalog {catalog.kind}")
    print(f"baseline (httpx + selectolax, 1 process): {base['rate']:8.0f} URLs/s")
    print(
        f"shoal ({len(jobs)} jobs, first POST -> last completed_at): {rate:8.0f} URLs/s  "
        f"({wall:.1f} s; observed by polling {wall_observed:.1f} s)"
    )
    print(f"ratio shoal/baseline: {rate / base['rate']:.2f}")
    print(f"shoal job statuses: {sorted(statuses)}; rows {rows}/{n}, wrong values {wrong}")
    print(f"shoal per job, started_at -> completed_at s: {_stats(run_s)}")
    print(f"shoal per job, created_at -> started_at s (queue wait): {_stats(wait_s)}")
    per_job_rate = [ch["rows"] / r for ch, r in zip(checks, run_s, strict=True) if r > 0]
    print(f"shoal per job, rows / run time URLs/s: {_stats(per_job_rate)}")
    codes: collections.Counter[str] = collections.Counter()
    for ch in checks:
        codes.update(ch["codes"])
    if codes:
        print(f"shoal errored URLs by code: {dict(codes)}")
    # A worker slot frees when a flow run ends; the next job's started_at (set by the flow once
    # its process is up) minus that moment is the per-job start cost (poll + spawn + imports).
    t0 = sh["t_first_post"]
    starts = sorted(_ts(j["started_at"]) or 0.0 for j in jobs)
    ends = sorted(completed_ts)
    k = _max_jobs()
    gaps = [starts[i] - ends[i - k] for i in range(k, len(starts))]
    if gaps:
        print(f"shoal slot gap, a job's completed_at -> next started_at s: {_stats(gaps)}")
    print("shoal timeline (s after first POST: created / started / completed, status):")
    for j in sorted(jobs, key=lambda j: _ts(j["started_at"]) or 0):
        c_, s_, e_ = (_ts(j[f]) or t0 for f in ("created_at", "started_at", "completed_at"))
        print(f"  {j['name']}  {c_ - t0:6.1f} {s_ - t0:6.1f} {e_ - t0:6.1f}  {j['status']}")
    print(
        f"shoal: stack start-up {sh['startup']:.1f} s, submit {sh['submit_s']:.2f} s, "
        f"download+check {sh['download_s']:.1f} s"
    )
    print("shoal CPU s in the window: " + ", ".join(f"{k} {v:.1f}" for k, v in sh["cpu"].items()))
    print(
        f"shoal CPU s whole stack life (RUSAGE_CHILDREN, incl. start-up/shutdown): "
        f"{stack_cpu_total:.1f}"
    )
    stack_parts = ("prefect", "worker", "api")
    cpu_per_url = sum(v for k, v in sh["cpu"].items() if k in stack_parts) / n * 1000
    base_per_url = base["cpu"]["bench (self)"] / n * 1000
    print(f"CPU ms per URL: baseline client {base_per_url:.2f}, shoal stack {cpu_per_url:.2f}")
    ok = rows == n and wrong == 0 and statuses == {"completed"} and base["bad"] == 0
    if not ok:
        print("CHECK FAILED: row counts or values do not match", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
