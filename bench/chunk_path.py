"""Shoal's per-page path in one process against the bare loop in one process, same pages.

    .venv/bin/python bench/chunk_path.py [--urls 10000] [--concurrency 8] [--chunk 1250]
                                         [--repeat 3] [--profile out.pstats]

Without Prefect, the flow, the API or a second process: what one chunk process does to a page
(``shoal.scrape.scrape_chunk``: read the staged chunk, fetch through the engine, extract the
job's selectors, build the result row, write the chunk's Parquet part, record the counters)
against ``bench/_rawloop.py``'s loop (fetch, parse ``h1`` and ``.price``), each with the same
number of requests in flight, alternating, best of ``--repeat``. Prints pages/s, CPU ms per
page (``getrusage`` of this process) and the ratio; nginx serves the pages (``throughput.py``'s
catalog). ``--profile`` writes a cProfile of one Shoal run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _rawloop  # noqa: E402
from throughput import Catalog  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _loop(urls: list[str], c: int) -> tuple[float, float, int]:
    c0, t0 = _cpu(), time.perf_counter()
    ok, bad, _ = asyncio.run(_rawloop._loop(urls, c))
    return time.perf_counter() - t0, _cpu() - c0, ok


async def _shoal_run(urls: list[str], c: int, chunk_size: int, data: Path, run: int) -> int:
    from shoal.chunking import plan_chunks
    from shoal.contract import JobSpec
    from shoal.jobs import input_url, stage_inline, stage_record
    from shoal.scrape import JobRuntime, scrape_chunk
    from shoal.settings import Settings

    settings = Settings(data_dir=data, allow_private_networks=True, max_per_host=c)
    job_id = f"job_bench{run}"
    spec = JobSpec.model_validate(
        {
            "defaults": {"selectors": {"title": "h1", "price": ".price"}},
            "concurrency": c,
            "output": {"format": "parquet"},
            "fields": {"title": "string", "price": "number"},
        }
    )
    rt = JobRuntime.open(job_id, spec, settings)
    errors: list = []
    lines = [stage_record(u, None, {}, settings, errors) for u in urls]
    assert not errors, errors
    stage_inline(rt.storage, job_id, [ln for ln in lines if ln is not None])
    url = input_url(rt.storage, job_id)
    chunks, _ = plan_chunks(rt.storage, url, settings, slots=1, size=chunk_size)
    rows = 0
    try:
        for ch in chunks:
            rows += (await scrape_chunk(rt, url, ch)).rows
    finally:
        await rt.close()
    return rows


def _shoal(urls: list[str], c: int, chunk: int, data: Path, run: int) -> tuple[float, float, int]:
    c0, t0 = _cpu(), time.perf_counter()
    rows = asyncio.run(_shoal_run(urls, c, chunk, data, run))
    return time.perf_counter() - t0, _cpu() - c0, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--urls", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=1250, help="URLs per chunk (run one by one)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", help="write a cProfile of one Shoal run here")
    args = ap.parse_args()
    os.environ.setdefault("SHOAL_SIGNING_SECRET", "bench")
    with tempfile.TemporaryDirectory(prefix="shoal-chunkpath-") as tmp:
        cat = Catalog(Path(tmp), args.urls, 44).start()
        try:
            urls = cat.urls()
            import shoal.scrape  # noqa: F401 - imports outside the timed runs

            best_loop = best_shoal = None
            for run in range(args.repeat):
                loop = _loop(urls, args.concurrency)
                shoal = _shoal(urls, args.concurrency, args.chunk, Path(tmp) / f"d{run}", run)
                assert loop[2] == len(urls), f"loop ok {loop[2]}"
                assert shoal[2] == len(urls), f"shoal rows {shoal[2]}"
                print(
                    f"run {run}: loop {len(urls) / loop[0]:,.0f} pages/s "
                    f"{loop[1] / len(urls) * 1000:.3f} CPU ms/page; shoal "
                    f"{len(urls) / shoal[0]:,.0f} pages/s {shoal[1] / len(urls) * 1000:.3f} "
                    f"CPU ms/page",
                    flush=True,
                )
                if best_loop is None or loop[0] < best_loop[0]:
                    best_loop = loop
                if best_shoal is None or shoal[0] < best_shoal[0]:
                    best_shoal = shoal
            assert best_loop and best_shoal
            print(
                f"best of {args.repeat}, {len(urls)} URLs, C={args.concurrency}: "
                f"ratio shoal/loop pages/s {best_loop[0] / best_shoal[0]:.2f}, "
                f"CPU per page shoal/loop {best_shoal[1] / best_loop[1]:.2f}"
            )
            if args.profile:
                pr = cProfile.Profile()
                pr.enable()
                _shoal(urls, args.concurrency, args.chunk, Path(tmp) / "prof", 99)
                pr.disable()
                pr.dump_stats(args.profile)
                print(f"profile in {args.profile}")
        finally:
            cat.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
