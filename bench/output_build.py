"""Time building a job output from parts: rows/s and peak RSS per format.

    python bench/output_build.py [--rows 1000000] [--parts 100] [--dir /tmp/shoal-bench]

Writes the synthetic parts once (timed), then builds each format in its own subprocess so the
peak RSS (``ru_maxrss``) of one build is not hidden by another's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from shoal.output import build_output, count_rows, read_results, write_part  # noqa: E402
from shoal.storage import Storage  # noqa: E402

FIELDS = {
    "name": "string",
    "price": "number",
    "in_stock": "boolean",
    "stock": "integer",
    "tags": "list[string]",
    "status": "string",
}
CASES = [
    ("ndjson", False),
    ("ndjson", True),
    ("csv", False),
    ("csv", True),
    ("parquet", False),
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _row(i: int) -> dict:
    if i % 50 == 7:
        return {
            "url": f"https://store.example/p/{i}",
            "input_index": i,
            "status": "error",
            "fetched_at": "2026-05-12T22:00:14Z",
            "elapsed_ms": 30000,
            "attempts": 3,
            "credits": 1,
            "meta": None,
            "data": None,
            "error": {"code": "timeout", "message": "no answer in 30 s"},
        }
    return {
        "url": f"https://store.example/p/{i}",
        "input_index": i,
        "status": "ok",
        "http_status": 200,
        "final_url": f"https://store.example/p/{i}",
        "fetched_at": "2026-05-12T22:00:14Z",
        "elapsed_ms": 100 + i % 900,
        "attempts": 1,
        "credits": 1,
        "content_hash": f"sha256:{i:064x}",
        "meta": {"sku": f"SKU-{i}"} if i % 3 == 0 else None,
        "data": {
            "name": f"Product {i} with a reasonably long name",
            "price": 9.99 + i % 1000,
            "in_stock": i % 2 == 0,
            "stock": i % 37,
            "tags": ["sale", "new"] if i % 5 == 0 else [],
            "status": "available",
        },
        "error": None,
    }


def make_parts(storage: Storage, rows: int, parts: int) -> list[str]:
    per = rows // parts
    urls = []
    for p in range(parts):
        url = storage.url("jobs", "bench", "parts", f"{p:06d}.parquet")
        write_part(storage, url, [_row(i) for i in range(p * per, (p + 1) * per)])
        urls.append(url)
    return urls


def run_one(root: str, fmt: str, gzip: bool) -> dict:
    storage = Storage(root)
    parts = storage.list(storage.url("jobs", "bench", "parts"))
    t = time.perf_counter()
    files = build_output(
        storage,
        parts,
        storage.url("jobs", "bench", f"out-{fmt}-{int(gzip)}"),
        fmt=fmt,
        gzip=gzip,
        fields=FIELDS,
    )
    dt = time.perf_counter() - t
    rows = sum(f.rows for f in files)
    return {
        "case": f"{fmt}{'.gz' if gzip else ''}",
        "rows": rows,
        "seconds": round(dt, 2),
        "rows_per_s": int(rows / dt),
        "size_mb": round(sum(f.size_bytes for f in files) / 1e6, 1),
        "peak_rss_mb": round(_rss_mb()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--parts", type=int, default=100)
    ap.add_argument("--dir", default="/tmp/shoal-bench")
    ap.add_argument("--one", nargs=2, metavar=("FMT", "GZIP"))
    ap.add_argument("--gzip-level", type=int, help="override shoal.output's GZIP_LEVEL")
    args = ap.parse_args()
    if args.gzip_level is not None:
        import shoal.output._build as build

        build.GZIP_LEVEL = args.gzip_level
    if args.one:
        print(json.dumps(run_one(args.dir, args.one[0], args.one[1] == "1")))
        return

    shutil.rmtree(args.dir, ignore_errors=True)
    storage = Storage(args.dir)
    t = time.perf_counter()
    parts = make_parts(storage, args.rows, args.parts)
    dt = time.perf_counter() - t
    print(f"write_part: {args.rows:,} rows in {args.parts} parts, {dt:.2f} s, "
          f"{int(args.rows / dt):,} rows/s, peak RSS {_rss_mb():.0f} MB")  # fmt: skip

    t = time.perf_counter()
    total, errored = count_rows(storage, parts)
    ms = 1000 * (time.perf_counter() - t)
    print(f"count_rows: {total:,} rows, {errored:,} errored, {ms:.1f} ms")
    for offset in (0, args.rows - 1000):
        t = time.perf_counter()
        page, _ = read_results(storage, parts, limit=1000, offset=offset)
        ms = 1000 * (time.perf_counter() - t)
        assert page[0]["input_index"] == offset, page[0]["input_index"]
        print(f"read_results(limit=1000, offset={offset:,}): {ms:.1f} ms")

    for fmt, gzip in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--dir", args.dir, "--one", fmt, str(int(gzip))],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['case']:<11} {r['rows']:,} rows  {r['seconds']:>6.2f} s  "
              f"{r['rows_per_s']:>9,} rows/s  {r['size_mb']:>7.1f} MB  "
              f"peak RSS {r['peak_rss_mb']} MB")  # fmt: skip


if __name__ == "__main__":
    main()
