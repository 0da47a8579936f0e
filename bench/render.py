"""Rendered pages per second and memory: Shoal's Renderer against a bare Playwright loop.

    .venv/bin/python bench/render.py [--pages 240] [--concurrency 4,8,16] [--rounds 2]

One run, one nginx catalog of N product pages (~20 KB each) whose price is put in by a small
inline script (the served ``<span class="price">`` is empty; the script reads the price from a
JSON island and writes it), one Chromium binary (Debian's ``chromium-headless-shell``). At each
concurrency C, alternating in ``--rounds`` rounds so drift from the other load on this shared
machine falls on both sides:

- **bare**: ``chromium.launch(executable_path=...)`` with the same flags, C workers each doing
  ``new_context()`` -> ``new_page()`` -> ``goto(load)`` ->
  ``wait_for_selector(".price:not(:empty)")`` -> ``content()`` -> ``context.close()`` (a fresh
  context per page, as Shoal does); no guard, no resource blocking.
- **bare + guard**: the same loop with only Shoal's guard added (a ``GuardProxy`` SOCKS5
  listener per page as the context's proxy): what routing every connection through Python
  costs by itself.
- **shoal**: ``Renderer.render(url, wait_for={"selector": ".price:not(:empty)"})`` with
  ``render_max_pages=C``: per page a SOCKS5 guard listener and a context proxied through it,
  the default ``block_resources`` (DevTools Fetch patterns), dialog/popup/crash handlers, the
  scroll to the end, the deadline.

Every page's HTML is checked for its own price. Reported: pages/s (median of rounds), the
ratio shoal/bare, the CPU seconds per page of the whole process tree (this Python, Playwright's
driver, Chromium; ``/proc``, reaped children included), which the other sessions' load on this
machine skews far less than pages/s, the peak PSS of the browser's process tree during the
run (sampled every 50 ms) and that peak less the idle browser's, divided by C (memory per open
page), and the Python process's RSS growth. Last, at C=8 on a third of the pages, the cost of
``screenshot="viewport"`` and ``"full_page"`` per page (ms of ``timings["screenshot"]`` and
the pages/s they cost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procs  # noqa: E402
import aiohttp  # noqa: E402
from _nginx import Nginx, find_or_install  # noqa: E402

from shoal.fetch._policy import AddressPolicy  # noqa: E402
from shoal.render import Renderer, _procmem, find_browser  # noqa: E402
from shoal.render._pool import EXTRA_ARGS  # noqa: E402
from shoal.render._socks import GuardProxy, guard_dialers  # noqa: E402
from shoal.settings import Settings  # noqa: E402

_PAGE = """<!doctype html><html><head><meta charset=utf-8><title>Product {i}</title></head>
<body><h1>Product {i}</h1><span class="price"></span>
<script type="application/json" id="data">{data}</script>
{filler}
<script>
  const d = JSON.parse(document.getElementById("data").textContent);
  document.querySelector(".price").textContent = d.price;
</script></body></html>"""


def price(i: int) -> str:
    return f"{(i * 37) % 1000 + 0.99:.2f}"


def write_catalog(root: Path, n: int) -> None:
    # ~20 KB in 40 paragraphs: a page ~4,000 px tall at 1280 px, like a product page
    words = " ".join(f"word{k}" for k in range(80))
    filler = "".join(f"<p>Paragraph {k}: {words}.</p>" for k in range(40))
    (root / "p").mkdir(parents=True)
    for i in range(n):
        data = json.dumps({"sku": f"SKU-{i}", "price": price(i)})
        (root / "p" / str(i)).write_text(_PAGE.format(i=i, data=data, filler=filler))
    root.chmod(0o755)
    (root / "p").chmod(0o755)


class PssSampler(threading.Thread):
    """Peak summed PSS of the tree of the process whose command line holds ``marker``."""

    def __init__(self, marker: str) -> None:
        super().__init__(daemon=True)
        self.marker, self.peak, self._halt = marker, 0, threading.Event()

    def run(self) -> None:
        pid = None
        while not self._halt.is_set():
            pid = pid or _procmem.find_pid(self.marker)
            if pid:
                self.peak = max(self.peak, _procmem.tree_pss_bytes(pid))
            self._halt.wait(0.05)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def _idle_pss(marker: str) -> int:
    pid = _procmem.find_pid(marker)
    return _procmem.tree_pss_bytes(pid) if pid else 0


def tree_cpu() -> float:
    """CPU seconds of this process and everything below it (Playwright's driver, Chromium),
    reaped children included: a measure that the other load on the machine does not skew."""
    return _procs.tree_cpu({"me": os.getpid()})["me"]


async def _drive(urls: list[str], c: int, one: Any) -> float:
    queue = list(reversed(urls))

    async def worker() -> None:
        while queue:
            i, url = queue.pop()
            html = await one(url)
            assert f'<span class="price">{price(i)}</span>' in html, url

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    return time.perf_counter() - t0


async def run_bare(
    exe: str, urls: list[tuple[int, str]], c: int, *, guard: bool = False
) -> dict[str, float]:
    from playwright.async_api import async_playwright

    marker = f"--shoal-bench=bare-{guard}"
    resolver = aiohttp.ThreadedResolver()
    policy = AddressPolicy(allow_private_networks=True)
    direct, proxied = guard_dialers(policy, resolver, 10.0)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=exe, headless=True, args=[*EXTRA_ARGS, marker]
        )

        async def one(url: str) -> str:
            if guard:  # only the guard: a SOCKS5 listener per page, as Shoal has
                socks = await GuardProxy(
                    policy=policy, direct=direct, proxied=proxied, resolver=resolver
                ).start()
                context = await browser.new_context(proxy={"server": socks.url})
            else:
                context = await browser.new_context()
            try:
                page = await context.new_page()
                await page.goto(url, wait_until="load")
                await page.wait_for_selector(".price:not(:empty)", state="attached")
                return await page.content()
            finally:
                await context.close()
                if guard:
                    await socks.close()

        await one(urls[0][1])  # warm
        idle = _idle_pss(marker)
        sampler = PssSampler(marker)
        sampler.start()
        cpu = tree_cpu()
        wall = await _drive(urls, c, one)  # type: ignore[arg-type]
        cpu = tree_cpu() - cpu
        peak = sampler.stop()
        await browser.close()
    return {"pps": len(urls) / wall, "peak": peak, "idle": idle, "cpu_ms": cpu * 1000 / len(urls)}


async def run_shoal(
    urls: list[tuple[int, str]], c: int, screenshot: str | None = None
) -> dict[str, float]:
    settings = Settings(allow_private_networks=True, render_max_pages=c)  # type: ignore[call-arg]
    shots: list[float] = []
    async with Renderer(settings) as renderer:
        marker = renderer.pool.browsers[0].marker

        async def one(url: str) -> str:
            page = await renderer.render(
                url,
                wait_for={"selector": ".price:not(:empty)"},
                screenshot=screenshot,  # type: ignore[arg-type]
            )
            if screenshot:
                assert page.screenshot_png and page.screenshot_png[:4] == b"\x89PNG"
                shots.append(page.timings["screenshot"])
            return page.html

        await one(urls[0][1])
        idle = _idle_pss(marker)
        sampler = PssSampler(marker)
        sampler.start()
        cpu = tree_cpu()
        wall = await _drive(urls, c, one)  # type: ignore[arg-type]
        cpu = tree_cpu() - cpu
        peak = sampler.stop()
    shot_ms = statistics.median(shots) * 1000 if shots else 0.0
    return {"pps": len(urls) / wall, "peak": peak, "idle": idle, "shot_ms": shot_ms,
            "cpu_ms": cpu * 1000 / len(urls)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=240)
    ap.add_argument("--concurrency", default="4,8,16")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    exe = find_browser(Settings())
    binary = find_or_install()
    if binary is None:
        raise SystemExit("nginx is needed (apt-get install nginx-light)")
    with tempfile.TemporaryDirectory(prefix="shoal-render-bench-") as tmp:
        os.chmod(tmp, 0o755)
        www = Path(tmp) / "www"
        write_catalog(www, args.pages)
        nginx = Nginx(binary, www, Path(tmp) / "nginx").start("/p/0")
        try:
            urls = [(i, f"{nginx.base}/p/{i}") for i in range(args.pages)]
            print(f"browser: {exe}; {args.pages} pages of {len(_PAGE) + 20_000} B, "
                  f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            rows = []
            for c in (int(x) for x in args.concurrency.split(",")):
                bare: list[dict[str, float]] = []
                guarded: list[dict[str, float]] = []
                shoal: list[dict[str, float]] = []
                for _ in range(args.rounds):
                    bare.append(asyncio.run(run_bare(exe, urls, c)))
                    guarded.append(asyncio.run(run_bare(exe, urls, c, guard=True)))
                    shoal.append(asyncio.run(run_shoal(urls, c)))
                b = statistics.median(r["pps"] for r in bare)
                g = statistics.median(r["pps"] for r in guarded)
                s = statistics.median(r["pps"] for r in shoal)
                peak_b = max(r["peak"] for r in bare) / 2**20
                peak_s = max(r["peak"] for r in shoal) / 2**20
                per_page = (max(r["peak"] - r["idle"] for r in shoal)) / 2**20 / c
                per_page_b = (max(r["peak"] - r["idle"] for r in bare)) / 2**20 / c
                cpu = [statistics.median(r["cpu_ms"] for r in x) for x in (bare, guarded, shoal)]
                rows.append((c, b, g, s, s / b, peak_b, peak_s, per_page_b, per_page, cpu))
                print(f"C={c}: bare {[round(r['pps'], 1) for r in bare]} bare+guard "
                      f"{[round(r['pps'], 1) for r in guarded]} shoal "
                      f"{[round(r['pps'], 1) for r in shoal]} pages/s", flush=True)  # fmt: skip
            print()
            print("| C | pages/s bare | bare + guard | shoal | shoal/bare | CPU ms/page bare "
                  "| bare + guard | shoal | shoal/bare by CPU | peak PSS bare | shoal "
                  "| MB per open page bare | shoal |")  # fmt: skip
            print("|---" * 13 + "|")
            for c, b, g, s, ratio, pb, ps, ppb, pps, cpu in rows:
                print(f"| {c} | {b:.1f} | {g:.1f} | {s:.1f} | {ratio:.2f}x | {cpu[0]:.0f} "
                      f"| {cpu[1]:.0f} | {cpu[2]:.0f} | {cpu[0] / cpu[2]:.2f}x | {pb:.0f} MB "
                      f"| {ps:.0f} MB | {ppb:.0f} | {pps:.0f} |")  # fmt: skip
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(f"\nbench process peak RSS {rss1 / 1024:.0f} MB (after the catalog: "
                  f"{rss0 / 1024:.0f} MB)")  # fmt: skip
            c, few = 8, urls[: max(args.pages // 3, 16)]
            plain = asyncio.run(run_shoal(few, c))["pps"]
            view = asyncio.run(run_shoal(few, c, "viewport"))
            full = asyncio.run(run_shoal(few, c, "full_page"))
            plain_cpu = asyncio.run(run_shoal(few, c))["cpu_ms"]
            print(f"\nCPU ms per page at C={c}: no screenshot {plain_cpu:.0f}, viewport "
                  f"{view['cpu_ms']:.0f}, full page {full['cpu_ms']:.0f}")  # fmt: skip
            print(f"screenshots at C={c}: none {plain:.1f} pages/s; viewport "
                  f"{view['pps']:.1f} pages/s ({view['shot_ms']:.0f} ms median per shot); "
                  f"full page {full['pps']:.1f} pages/s ({full['shot_ms']:.0f} ms)")  # fmt: skip
        finally:
            nginx.stop()


if __name__ == "__main__":
    main()
