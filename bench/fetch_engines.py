"""Fetching alone: the old httpx client loop, Shoal's ``Engine`` and a bare aiohttp loop.

    python bench/fetch_engines.py [--pages 5000] [--concurrency 16,64,256] [--repeat 1]

Writes N product pages (``tests.sites.catalog.product_html``, ~3 KB, padded with paragraphs to
``--kb`` KB, default 44: the size the design's measurements used) to a temp folder,
serves them with nginx on 127.0.0.1 (``bench/_nginx.py``; installed with apt-get when missing
and root) and fetches every page with each client at each concurrency: C worker tasks pull URLs
from one list, fetch, read the whole body and decode it to text. No parsing: this measures the
client. Reports pages/s and CPU ms per page (this process's user+system time; nginx is another
process) and the ratios the fetch engine is held to: Engine / bare aiohttp >= 0.8 at every
concurrency, and flat (slowest / fastest concurrency) across 16..256.

The Engine runs as a job would: robots.txt respected (nginx answers 404, so one extra request),
SSRF guard on (loopback allowed for the benchmark), per-host cap raised to the concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from _nginx import Nginx, find_or_install  # noqa: E402

from shoal.fetch import Engine, FetchOptions  # noqa: E402
from shoal.settings import Settings  # noqa: E402
from tests.sites.catalog import product_html  # noqa: E402

Fetch = Callable[[str], Awaitable[int]]  # returns the number of characters of text
_FILLER = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>"


def page(n: int, kb: int) -> str:
    """Product page ``n`` padded with paragraphs to about ``kb`` KB (0: as the catalog has it)."""
    html = product_html(n)
    missing = kb * 1024 - len(html)
    if missing <= 0:
        return html
    return html.replace("</body>", _FILLER * (missing // len(_FILLER)) + "</body>")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _drive(urls: list[str], concurrency: int, fetch: Fetch) -> tuple[float, float, int]:
    """Fetch every URL with ``concurrency`` workers; (wall s, cpu s, total characters)."""
    it = iter(urls)
    total = 0

    async def worker() -> None:
        nonlocal total
        for url in it:
            chars = await fetch(url)  # not ``total += await ...``: that reads total first
            total += chars

    cpu0, t0 = _cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, _cpu() - cpu0, total


async def run_httpx(urls: list[str], concurrency: int) -> tuple[float, float, int]:
    """The old engine's client: one AsyncClient, limits as the old ``Engine`` set them."""
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, follow_redirects=False, trust_env=False) as c:

        async def fetch(url: str) -> int:
            r = await c.get(url)
            return len(r.text)

        await _drive(urls[: concurrency * 2], concurrency, fetch)  # warm the pool
        return await _drive(urls, concurrency, fetch)


async def run_aiohttp(urls: list[str], concurrency: int) -> tuple[float, float, int]:
    """A bare aiohttp loop: what the hardware and the library allow."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def fetch(url: str) -> int:
            async with s.get(url) as r:
                return len((await r.read()).decode("utf-8"))

        await _drive(urls[: concurrency * 2], concurrency, fetch)
        return await _drive(urls, concurrency, fetch)


async def run_engine(urls: list[str], concurrency: int) -> tuple[float, float, int]:
    """Shoal's fetch engine as a job uses it."""
    settings = Settings(allow_private_networks=True, max_per_host=concurrency)  # type: ignore[call-arg]
    options = FetchOptions(timeout_s=60)
    async with Engine(concurrency=concurrency, settings=settings) as engine:

        async def fetch(url: str) -> int:
            return len((await engine.fetch(url, options)).text)

        await _drive(urls[: concurrency * 2], concurrency, fetch)
        return await _drive(urls, concurrency, fetch)


CLIENTS = {"httpx (old)": run_httpx, "Engine": run_engine, "bare aiohttp": run_aiohttp}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--pages", type=int, default=5_000)
    ap.add_argument(
        "--kb", type=int, default=44, help="pad pages to this size (0: the catalog's ~3 KB)"
    )
    ap.add_argument("--concurrency", default="16,64,256")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell; the best is kept")
    ap.add_argument("--skip-httpx", action="store_true")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    clients = {k: v for k, v in CLIENTS.items() if not (args.skip_httpx and "httpx" in k)}

    binary = find_or_install()
    if binary is None:
        sys.exit("nginx is needed (apt-get install nginx-light)")
    tmp = Path(tempfile.mkdtemp(prefix="shoal-fetch-bench-"))
    root = tmp / "site"
    root.mkdir()
    for n in range(args.pages):
        (root / str(n)).write_text(page(n, args.kb))
    os.chmod(tmp, 0o755)
    os.chmod(root, 0o755)
    nginx = Nginx(binary, root, tmp / "nginx").start(probe_path="/0")
    urls = [f"{nginx.base}/{n}" for n in range(args.pages)]
    expected = sum(len(page(n, args.kb)) for n in range(args.pages))
    print(
        f"{args.pages} pages of ~{expected / args.pages / 1024:.1f} KB from nginx {nginx.base}, "
        f"python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, "
        f"httpx {httpx.__version__}, {os.cpu_count()} CPUs"
    )
    results: dict[tuple[str, int], tuple[float, float]] = {}
    try:
        for c in levels:
            for name, run in clients.items():
                best: tuple[float, float] | None = None
                for _ in range(args.repeat):
                    wall, cpu, chars = asyncio.run(run(urls, c))
                    if chars != expected:
                        raise SystemExit(f"{name} @ {c}: read {chars} chars, expected {expected}")
                    rate, cpu_ms = args.pages / wall, cpu / args.pages * 1000
                    if best is None or rate > best[0]:
                        best = (rate, cpu_ms)
                assert best is not None
                results[(name, c)] = best
                print(f"  {name:>13} @ {c:>3}: {best[0]:7.0f} pages/s  {best[1]:.3f} CPU ms/page")
    finally:
        nginx.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    head = "| client | " + " | ".join(f"C={c} pages/s (CPU ms/page)" for c in levels)
    print(head + " | slowest/fastest C |")
    print("|---" * (len(levels) + 2) + "|")
    for name in clients:
        rates = [results[(name, c)][0] for c in levels]
        cells = " | ".join(
            f"{results[(name, c)][0]:.0f} ({results[(name, c)][1]:.2f})" for c in levels
        )
        print(f"| {name} | {cells} | {min(rates) / max(rates):.2f} |")
    ratio = [results[("Engine", c)][0] / results[("bare aiohttp", c)][0] for c in levels]
    print("| Engine / bare aiohttp | " + " | ".join(f"{r:.2f}" for r in ratio) + " | |")
    if "httpx (old)" in clients:
        speedup = [results[("Engine", c)][0] / results[("httpx (old)", c)][0] for c in levels]
        print("| Engine / httpx (old) | " + " | ".join(f"{r:.1f}x" for r in speedup) + " | |")
    ok = min(ratio) >= 0.8
    print(f"\nEngine >= 0.8 x bare aiohttp at every concurrency: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
