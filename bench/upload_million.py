"""Uploading a million-URL file and running one job over it, on the real stack.

    .venv/bin/python bench/upload_million.py [--lines 1000000] [--concurrency 64] [--no-job]

1. nginx (``bench/_nginx.py``) serves one small product page; the file's URLs are
   ``<nginx>/p.html?i=N`` (distinct URLs, one file on disk; nginx ignores the query). Every
   tenth line is an object with ``meta``, the rest JSON strings.
2. Writes ``urls.ndjson`` (N lines) and ``urls.ndjson.gz``, starts ``shoal up``
   (``tests.e2e.stack.Stack``) and uploads each file as a streamed raw body (httpx with a
   generator of 1 MiB blocks, so neither side holds it). Reports the upload's wall time and
   MB/s, the answer's counts, and the API process's peak RSS during the upload: its ``VmHWM``
   (reset before each upload through ``/proc/<pid>/clear_refs`` when allowed) and the highest
   ``VmRSS`` sampled every 0.1 s.
3. Starts one job over the plain upload (selectors ``title: h1``, Parquet out), checks
   ``urls_total`` = N as soon as the job exists, polls it to the end and reports the job's wall
   time (``started_at`` -> ``completed_at``), POST -> final seen, pages/s, and the worker side's
   memory: the peak of the summed RSS of the worker's descendants (the flow-run process and its
   chunk processes), sampled every 0.2 s, and the highest ``VmHWM`` among them.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _procs  # noqa: E402
import httpx  # noqa: E402
from _nginx import Nginx, find_or_install  # noqa: E402
from _procs import every  # noqa: E402

from tests.e2e.stack import Stack  # noqa: E402
from tests.sites.catalog import product_html  # noqa: E402

FINAL = {"completed", "partial", "cancelled", "failed"}
MB = 1024 * 1024


def _status_kb(pid: int, field: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_hwm(pid: int) -> bool:
    """Reset the process's peak RSS (Linux: writing 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssPeak(threading.Thread):
    """The highest ``VmRSS`` of one process, sampled every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, _status_kb(self.pid, "VmRSS"))
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join(5)
        return self.peak


def write_files(folder: Path, base: str, n: int) -> tuple[Path, Path]:
    plain, gz = folder / "urls.ndjson", folder / "urls.ndjson.gz"
    t0 = time.perf_counter()
    with open(plain, "wb") as fh:
        block: list[bytes] = []
        for i in range(n):
            url = f"{base}/p.html?i={i}"
            if i % 10 == 0:
                block.append(json.dumps({"url": url, "meta": {"i": i}}).encode() + b"\n")
            else:
                block.append(json.dumps(url).encode() + b"\n")
            if len(block) >= 10_000:
                fh.write(b"".join(block))
                block.clear()
        fh.write(b"".join(block))
    with open(plain, "rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    print(
        f"files: {n:,} lines, {plain.stat().st_size / MB:,.1f} MB plain, "
        f"{gz.stat().st_size / MB:,.1f} MB gzip, written in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return plain, gz


def _blocks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            yield block


def upload(client: httpx.Client, path: Path, api_pid: int) -> dict[str, Any]:
    headers = {"Content-Type": "application/x-ndjson"}
    if path.suffix == ".gz":
        headers["Content-Encoding"] = "gzip"
    rss0 = _status_kb(api_pid, "VmRSS")
    reset = _reset_hwm(api_pid)
    sampler = RssPeak(api_pid)
    sampler.start()
    t0 = time.perf_counter()
    r = client.post("/v1/uploads", content=_blocks(path), headers=headers, timeout=3600)
    wall = time.perf_counter() - t0
    peak_sampled = sampler.stop()
    if r.status_code != 201:
        raise RuntimeError(f"upload of {path.name} -> {r.status_code}: {r.text[:500]}")
    size = path.stat().st_size
    res = {
        "file": path.name,
        "bytes": size,
        "wall_s": wall,
        "mb_s": size / MB / wall,
        "answer": r.json(),
        "api_rss_before": rss0,
        "api_hwm": _status_kb(api_pid, "VmHWM") if reset else None,
        "api_rss_peak_sampled": peak_sampled,
    }
    a = res["answer"]
    hwm = f"{res['api_hwm'] / MB:,.0f} MB" if reset else "n/a (clear_refs not allowed)"
    print(
        f"upload {path.name}: {wall:.1f} s ({res['mb_s']:.1f} MB/s); answer lines "
        f"{a['lines']:,}, urls_valid {a['urls_valid']:,}, errors {len(a['errors'])}, "
        f"size_bytes {a['size_bytes']:,}; API RSS before {rss0 / MB:,.0f} MB, peak VmHWM {hwm}, "
        f"peak sampled {peak_sampled / MB:,.0f} MB",
        flush=True,
    )
    return res


def run_job(
    stack: Stack, client: httpx.Client, upload_id: str, n: int, c: int, worker_pid: int
) -> dict[str, Any]:
    sampler = _procs.Sampler({"worker": worker_pid}, interval=0.2)
    sampler.start()
    body = {
        "name": "bench-upload-million",
        "input": {"upload_id": upload_id},
        "defaults": {"selectors": {"title": "h1"}},
        "concurrency": c,
        "output": {"format": "parquet"},
    }
    t_post = time.time()
    r = client.post("/v1/jobs", json=body)
    if r.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs -> {r.status_code}: {r.text[:500]}")
    created = r.json()
    job_id = created["id"]
    total_at = time.time() - t_post if created["urls_total"] == n else None
    progress = every(
        15,
        lambda j: (
            f"  ... {j['status']} {j['urls_done']:,}/{j['urls_total']} "
            f"({j['progress']['percentage']}%), eta {j['eta_s']} s"
        ),
    )

    def on_poll(j: dict[str, Any]) -> None:
        nonlocal total_at
        if total_at is None and j.get("urls_total") == n:
            total_at = time.time() - t_post
        progress(j)

    job = stack.wait_job(client, job_id, FINAL, 600 + n / 100, poll=0.5, on_poll=on_poll)
    seen = time.time() - t_post
    time.sleep(0.5)
    sampler.stop()
    tracks = sampler.new_since(t_post - 0.5)
    started = datetime.fromisoformat(job["started_at"].replace("Z", "+00:00")).timestamp()
    completed = datetime.fromisoformat(job["completed_at"].replace("Z", "+00:00")).timestamp()
    res = {
        "job_id": job_id,
        "status": job["status"],
        "urls_total_at_create": created["urls_total"],
        "urls_total_seen_s": total_at,
        "urls_done": job["urls_done"],
        "urls_errored": job["urls_errored"],
        "queue_s": started - t_post,
        "run_s": completed - started,
        "seen_s": seen,
        "pages_s": job["urls_done"] / max(completed - started, 1e-9),
        "worker_tree_peak_rss": sampler.peak["worker"],
        "worker_max_hwm": max((t.hwm for t in tracks), default=0),
        "procs": [(t.pid, t.cmd, t.hwm) for t in tracks],
    }
    print(
        f"job {job_id}: {job['status']}, {job['urls_done']:,} done, "
        f"{job['urls_errored']:,} errored; urls_total {created['urls_total']:,} at creation "
        f"(= {n:,} seen after {total_at:.2f} s); queued {res['queue_s']:.1f} s, ran "
        f"{res['run_s']:.1f} s ({res['pages_s']:,.0f} pages/s), POST -> final seen "
        f"{seen:.1f} s; worker descendants peak RSS {res['worker_tree_peak_rss'] / MB:,.0f} MB "
        f"(sum), highest VmHWM {res['worker_max_hwm'] / MB:,.0f} MB",
        flush=True,
    )
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--no-job", action="store_true", help="only upload")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (logs, files)")
    args = ap.parse_args()
    n = args.lines

    binary = find_or_install()
    if binary is None:
        raise SystemExit("nginx is needed (apt-get install nginx-light)")
    tmp = Path(tempfile.mkdtemp(prefix="shoal-upload-bench-"))
    www = tmp / "www"
    www.mkdir()
    (www / "p.html").write_text(product_html(1))
    for p in (tmp, www):
        os.chmod(p, 0o755)  # nginx's worker runs as nobody when we are root
    nginx = Nginx(binary, www, tmp / "nginx").start("/p.html")
    stack: Stack | None = None
    results: dict[str, Any] = {"lines": n, "cpus": os.cpu_count()}
    try:
        plain, gz = write_files(tmp, nginx.base, n)
        stack = Stack(tmp / "data")
        t0 = time.perf_counter()
        stack.start()
        print(f"stack: up in {time.perf_counter() - t0:.1f} s at {stack.base}", flush=True)
        pids = json.loads((stack.data_dir / "pids.json").read_text())
        with stack.client() as client:
            results["uploads"] = [upload(client, path, pids["api"]) for path in (plain, gz)]
            for res in results["uploads"]:
                a = res["answer"]
                assert (a["lines"], a["urls_valid"], a["errors"]) == (n, n, []), a
            if not args.no_job:
                first = results["uploads"][0]["answer"]["id"]
                results["job"] = run_job(stack, client, first, n, args.concurrency, pids["worker"])
        print("result " + json.dumps(results, default=str), flush=True)
    finally:
        if stack is not None:
            stack.stop()
        nginx.stop()
        if args.keep:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
