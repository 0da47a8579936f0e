"""Heavy formats (``markdown``) in a job whose chunks run in worker processes: parsed inline in
each chunk process (one level of worker processes, what Shoal does) against a pool of parse
processes inside each chunk process (``cores x cores`` processes, what it did before).

    .venv/bin/python bench/parse_processes.py [--urls 4000] [--concurrency 32] [--repeat 2]

One nginx-served catalog (``throughput.py``'s pages), the real stack (``shoal up``), one job per
run with ``formats: ["markdown"]``, alternating the two layouts (``SHOAL_PARSE_WORKERS``: 0, the
chunk processes parse inline; -1, each chunk process also starts one parse process per core, as
before this change forced it), best of ``--repeat``. Prints pages/s of the job
(``started_at -> completed_at``) and the ratio inline / nested.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from throughput import Catalog  # noqa: E402

from tests.e2e.stack import Stack  # noqa: E402

FINAL = {"completed", "partial", "cancelled", "failed"}


def _rate(stack: Stack, urls: list[str], concurrency: int) -> float:
    with stack.client() as c:
        body = {
            "input": {"urls": urls},
            "defaults": {"formats": ["markdown"]},
            "concurrency": concurrency,
        }
        r = c.post("/v1/jobs", json=body)
        r.raise_for_status()
        job = stack.wait_job(c, r.json()["id"], FINAL, timeout=1800, poll=0.2)
    assert job["status"] == "completed" and job["urls_done"] == len(urls), job
    took = datetime.fromisoformat(job["completed_at"]) - datetime.fromisoformat(job["started_at"])
    return len(urls) / took.total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--urls", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shoal-parse-"))
    catalog = Catalog(tmp, args.urls, 44).start()
    urls = catalog.urls()
    env = {
        "SHOAL_MAX_INLINE_URLS": str(args.urls),
        "SHOAL_MAX_PER_HOST": str(args.concurrency),
        "SHOAL_ALLOW_PRIVATE_NETWORKS": "1",
    }
    best: dict[str, float] = {"inline": 0.0, "nested": 0.0}
    try:
        for n in range(args.repeat):
            for name, workers in (("inline", "0"), ("nested", "-1")):
                stack = Stack(tmp / f"{name}-{n}", SHOAL_PARSE_WORKERS=workers, **env).start()
                try:
                    t0 = time.perf_counter()
                    rate = _rate(stack, urls, args.concurrency)
                    print(
                        f"{name:7s} run {n}: {rate:7.0f} pages/s ({time.perf_counter() - t0:.1f} s)"
                    )
                    best[name] = max(best[name], rate)
                finally:
                    stack.stop()
    finally:
        catalog.stop()
    print(
        f"best: inline {best['inline']:.0f} pages/s, nested {best['nested']:.0f} pages/s, "
        f"ratio inline/nested {best['inline'] / best['nested']:.2f}"
    )


if __name__ == "__main__":
    main()
