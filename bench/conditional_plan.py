"""Conditional fetch's lookup at scale: the plan-time join and each chunk's read of its range.

    .venv/bin/python bench/conditional_plan.py [--rows 1000000] [--chunk 5000] [--shuffle]
                                               [--dir /tmp/shoal-cond-bench]

Writes a previous job of ``--rows`` ok rows (parts of ``--chunk`` rows, each with an ETag, a
Last-Modified and a small ``data``) and this job's staged input of the same URLs (``--shuffle``:
in another order), then, each in its own subprocess so its peak RSS (``ru_maxrss``) is its own:

- ``plan``: ``shoal.conditional.prepare`` (the join, once per job, at plan time);
- ``chunks``: ``Conditional.for_chunk`` for 20 chunks spread over the input, and the previous
  rows of one chunk read as its 304s would (``previous_row`` for every URL of it);
- ``naive``: what a chunk would pay without the plan: the previous job's ``url`` and validator
  columns read whole into a dict, then its own URLs looked up (once; a job pays it per chunk).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import orjson  # noqa: E402

from shoal.storage import Storage  # noqa: E402

PREV, CUR = "job_prev", "job_cur"


def _url(i: int) -> str:
    return f"https://shop.example.com/catalog/item-{i:07d}?ref=nightly"


def _write(root: str, rows: int, chunk: int, shuffle: bool) -> None:
    from shoal.output import part_url, write_part

    storage = Storage(root)
    for c, first in enumerate(range(0, rows, chunk)):
        write_part(
            storage,
            part_url(storage, PREV, c),
            [
                {
                    "url": _url(i),
                    "input_index": i,
                    "status": "ok",
                    "http_status": 200,
                    "credits": 1,
                    "content_hash": f"sha256:{i:064x}",
                    "data": {"sku": f"SKU-{i}", "price": 10 + i % 900, "price_currency": "USD"},
                    "etag": f'"{i:016x}"',
                    "last_modified": "Mon, 02 Nov 2026 02:00:00 GMT",
                }
                for i in range(first, min(rows, first + chunk))
            ],
        )
    order = list(range(rows))
    if shuffle:
        random.Random(1).shuffle(order)
    lines = b"".join(orjson.dumps({"url": _url(i), "meta": None, "o": {}}) + b"\n" for i in order)
    storage.write_bytes_atomic(storage.url("jobs", CUR, "input.ndjson"), lines)


def _measure(step: str, root: str, rows: int, chunk: int) -> dict[str, float]:
    from shoal import conditional

    storage = Storage(root)
    in_url = storage.url("jobs", CUR, "input.ndjson")
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    out: dict[str, float] = {}
    if step == "plan":
        out["asked"] = conditional.prepare(storage, CUR, in_url, PREV)
    elif step == "chunks":
        cond = conditional.Conditional(storage, CUR, PREV)
        firsts = [k * (rows // 20) for k in range(20)]
        found = 0
        for first in firsts:
            found += len(cond.for_chunk(in_url, first, chunk))
        out["range_ms_per_chunk"] = (time.perf_counter() - t0) * 1000 / len(firsts)
        t1 = time.perf_counter()
        asks = cond.for_chunk(in_url, firsts[7], chunk)
        got = sum(
            asks.previous_row(v.prev_index, _url(v.prev_index)) is not None
            for v in list(asks.values())
        )
        out["previous_row_us"] = (time.perf_counter() - t1) * 1e6 / max(1, len(asks))
        out["found"], out["carried"] = found, got
    elif step == "naive":
        from shoal.output import iter_part_batches, part_urls

        cols = ["url", "input_index", "etag", "last_modified"]
        lookup = {}
        for b in iter_part_batches(storage, part_urls(storage, PREV), cols, batch_rows=65536):
            for u, i, e, m in zip(*b.to_pydict().values(), strict=True):
                lookup[u] = (i, e, m)
        mine = [_url(i) for i in range(chunk)]
        out["found"] = sum(u in lookup for u in mine)
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - cpu0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--shuffle", action="store_true")
    ap.add_argument("--dir", default="/tmp/shoal-cond-bench")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step == "write":
        _write(args.dir, args.rows, args.chunk, args.shuffle)
        return
    if args.step:
        print(json.dumps(_measure(args.step, args.dir, args.rows, args.chunk)))
        return
    shutil.rmtree(args.dir, ignore_errors=True)
    # every step in a child of this small process: Linux carries a parent's peak RSS over
    # fork and exec into the child's ru_maxrss, so writing the data here would hide the steps'
    for step in ("write", "plan", "chunks", "naive"):
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, __file__, "--step", step, "--dir", args.dir,
             "--rows", str(args.rows), "--chunk", str(args.chunk),
             *(["--shuffle"] if args.shuffle else [])],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        print(step, res.stdout.strip() or f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
