"""What a rendered page's User-Agent, navigation checks and headers cost: CPU ms per page.

    .venv/bin/python bench/render_requests.py [--pages 40] [--concurrency 4] [--rounds 3]
                                              [--base COMMIT]

``bench/render.py``'s nginx catalog (its ``write_catalog``: ~20 KB product pages whose price a
script writes), ``Renderer.render(url, wait_for={"selector": ".price:not(:empty)"})`` at
concurrency C, each variant in a process of its own (a fresh browser; the first page renders
before the clock starts), rounds alternating the order of variants so the drift of this shared
machine falls on all:

- **base**: the renderer at ``--base`` (a ``git archive`` of ``shoal/``; default: the commit
  before the interception of navigations and headers), the default ``block_resources`` only;
- **ua**: this tree, nothing asked: the User-Agent override and the ``block_resources``
  patterns (one DevTools session a page, as before);
- **robots**: plus ``allow_navigation`` (a check answering at once): every document request
  pauses for a round trip through Python;
- **robots+headers**: plus two headers (documents get them; XHR/fetch of the origin would pause
  too, and the catalog page makes none).

Reported per variant: CPU ms per page of the whole process tree (this Python, Playwright's
driver, Chromium; ``/proc``, reaped children included), each round's and the median, and wall
ms per page (median).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = ("base", "ua", "robots", "robots+headers")
BASE = "bc03212"  # the commit before 229e138 (navigations, headers, User-Agent)


async def _one_variant(variant: str, base_url: str, n: int, c: int) -> dict[str, float]:
    import _procs

    from shoal.render import Renderer
    from shoal.settings import Settings

    async def allow(url: str) -> None:
        return None

    kw: dict[str, object] = {}
    if variant in ("robots", "robots+headers"):
        kw["allow_navigation"] = allow
    if variant == "robots+headers":
        kw["headers"] = {"Accept-Language": "de-DE", "Authorization": "Bearer x"}
    wait = {"selector": ".price:not(:empty)"}
    settings = Settings(allow_private_networks=True, render_max_pages=c)  # type: ignore[call-arg]
    async with Renderer(settings) as renderer:
        await renderer.render(f"{base_url}/p/0", wait_for=wait, **kw)  # type: ignore[arg-type]
        queue = list(reversed(range(n)))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                page = await renderer.render(f"{base_url}/p/{i}", wait_for=wait, **kw)  # type: ignore[arg-type]
                assert '<span class="price">' in page.html and "</span>" in page.html

        me = {"me": os.getpid()}
        cpu = _procs.tree_cpu(me)["me"]
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        wall = time.perf_counter() - t0
        cpu = _procs.tree_cpu(me)["me"] - cpu
    return {"cpu_ms": cpu * 1000 / n, "wall_ms": wall * 1000 / n}


def _child(args: argparse.Namespace) -> None:
    out = asyncio.run(_one_variant(args.variant, args.url, args.pages, args.concurrency))
    print(json.dumps(out))


def _base_tree(commit: str, into: Path) -> Path:
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "shoal"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base", default=BASE)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:  # a variant's process: shoal from its PYTHONPATH (this tree or --base)
        return _child(args)
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from _nginx import Nginx, find_or_install
    from render import write_catalog

    binary = find_or_install()
    if binary is None:
        raise SystemExit("nginx is needed (apt-get install nginx-light)")
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="shoal-render-requests-") as tmp:
        os.chmod(tmp, 0o755)
        write_catalog(Path(tmp) / "www", args.pages)
        base = _base_tree(args.base, Path(tmp) / "base")
        nginx = Nginx(binary, Path(tmp) / "www", Path(tmp) / "nginx").start("/p/0")
        try:
            for r in range(args.rounds):
                for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                    tree = base if variant == "base" else ROOT
                    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT / 'bench'}"}
                    cmd = [sys.executable, __file__, "--variant", variant, "--url", nginx.base]
                    cmd += ["--pages", str(args.pages), "--concurrency", str(args.concurrency)]
                    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
                    if done.returncode:
                        raise SystemExit(done.stderr[-3000:])
                    got = json.loads(done.stdout.strip().splitlines()[-1])
                    results[variant].append(got)
                    print(
                        f"round {r + 1} {variant:15s} {got['cpu_ms']:6.1f} CPU ms/page", flush=True
                    )
        finally:
            nginx.stop()
    print(f"\n{args.pages} pages at C={args.concurrency}, {args.rounds} rounds")
    for variant, rows in results.items():
        cpus = sorted(round(x["cpu_ms"], 1) for x in rows)
        wall = statistics.median(x["wall_ms"] for x in rows)
        print(f"{variant:15s} CPU ms/page {cpus} median {statistics.median(cpus):.1f}; "
              f"wall ms/page median {wall:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
