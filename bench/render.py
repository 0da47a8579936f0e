"""Rendered pages per second and memory: Shoal (its Renderer, and a job's chunk path) against a
bare Playwright loop.

    .venv/bin/python bench/render.py [--pages 240] [--concurrency 4,8,16] [--rounds 2]
                                     [--sides bare,guard,renderer,job]

One run, one nginx catalog of N product pages (~20 KB each) whose price is put in by a small
inline script (the served ``<span class="price">`` is empty; the script reads the price from a
JSON island and writes it), one Chromium binary (Debian's ``chromium-headless-shell``). At each
concurrency C, in ``--rounds`` rounds whose order of sides alternates (forward, then backward)
so drift from the other load on this shared machine falls on every side:

- **bare**: ``chromium.launch(executable_path=...)`` with the same flags, C workers each doing
  ``new_context()`` -> ``new_page()`` -> ``goto(load)`` ->
  ``wait_for_selector(".price:not(:empty)")`` -> ``content()`` -> ``context.close()`` (a fresh
  context per page, as Shoal does); no guard, no resource blocking.
- **guard** (bare + guard): the same loop with only Shoal's guard added (a ``GuardProxy``
  SOCKS5 listener per page as the context's proxy): what routing every connection through
  Python costs by itself.
- **renderer**: ``Renderer.render(url, wait_for={"selector": ".price:not(:empty)"})`` with
  ``render_max_pages=C``: per page a SOCKS5 guard listener and a context proxied through it,
  the default ``block_resources`` (DevTools Fetch patterns), dialog/popup/crash handlers, the
  scroll to the end, the deadline.
- **job**: what a chunk process does for a job of ``render: true`` URLs, in this process and
  without Prefect (as ``bench/chunk_path.py`` does for fetched pages): the URLs staged as the
  job's input, a ``JobRuntime`` (concurrency C, ``render_max_pages`` C), ``scrape_chunk`` over
  them: per URL the engine's admission (``Engine.browse``: robots.txt, host slots), the
  Renderer as above (with the job's navigation check), the price extracted by the job's
  selector (inline: page workers take only heavy formats), the row built and the chunk's
  Parquet part written; every row read back and checked.

Every page's HTML (or row) is checked for its own price. Reported: pages/s (median of rounds),
the ratio to bare, the CPU seconds per page of the whole process tree (this Python, its page
workers, Playwright's driver, Chromium; ``/proc``, reaped children included), which the other
sessions' load on this machine skews far less than pages/s, and the same split by part (the
PSS sampler's own CPU left out); the peak PSS of the browser's process tree during the run
(sampled every 0.2 s) and that peak less the idle browser's, divided by C (memory per open
page); the Python process's RSS growth.
Last, through the job path at C=8 on a third of the pages, the cost of the ``screenshot``
format, viewport and full page (pages/s, CPU ms a page, the rows' median ``elapsed_ms``, the
stored PNG's size), with a run without screenshots before and after.
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
    """Peak summed PSS of the tree of the process whose command line holds ``marker``, every
    0.2 s; ``cpu``: the seconds this thread spent (subtracted from the measured CPU).

    Sampling is not free: reading ``smaps_rollup`` of each Chromium process costs kernel time
    charged to the reader. Every 50 ms, py-spy saw this thread in 43 % of the bench process's
    samples (a job run at C=4): up to ~30 ms a page of the "python" part, more on a slower side
    (more samples a page), and holding the GIL from the event loop."""

    def __init__(self, marker: str) -> None:
        super().__init__(daemon=True)
        self.marker, self.peak, self.cpu, self._halt = marker, 0, 0.0, threading.Event()

    def run(self) -> None:
        pid = None
        cpu0 = time.thread_time()
        while not self._halt.is_set():
            pid = pid or _procmem.find_pid(self.marker)
            if pid:
                self.peak = max(self.peak, _procmem.tree_pss_bytes(pid))
            self._halt.wait(0.2)
        self.cpu = time.thread_time() - cpu0

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


PARTS = ("python", "workers", "driver", "chromium")


def cpu_split() -> dict[str, float]:
    """CPU seconds so far of this process tree by part: this Python (the event loop, Shoal's
    per-URL path, Playwright's client), its page workers (Python children that extract),
    Playwright's driver (node), Chromium (the browser; its renderers are reaped into it). Each
    process's own CPU plus its reaped children's, so the parts sum to ``tree_cpu()``."""
    procs = _procs.table()
    me = os.getpid()
    out = dict.fromkeys(PARTS, 0.0)
    for pid in [me, *_procs.descendants(procs, me)]:
        p = procs[pid]
        if pid == me:
            part = "python"
        elif p.cmd.startswith("python"):
            part = "workers"
        elif p.cmd.startswith("node"):  # "node-MainThread"
            part = "driver"
        else:
            part = "chromium"
        out[part] += p.cpu_tree
    return out


def _per_page(after: dict[str, float], before: dict[str, float], n: int) -> dict[str, float]:
    return {f"{k}_ms": (after[k] - before[k]) * 1000 / n for k in PARTS}


async def _drive(urls: list[tuple[int, str]], c: int, one: Any) -> float:
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
        cpu, split = tree_cpu(), cpu_split()
        wall = await _drive(urls, c, one)
        peak = sampler.stop()  # its own CPU is not the side's
        cpu, split = tree_cpu() - cpu - sampler.cpu, _per_page(cpu_split(), split, len(urls))
        split["python_ms"] -= sampler.cpu * 1000 / len(urls)
        await browser.close()
    return {"pps": len(urls) / wall, "peak": peak, "idle": idle, "cpu_ms": cpu * 1000 / len(urls),
            **split}  # fmt: skip


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
        cpu, split = tree_cpu(), cpu_split()
        wall = await _drive(urls, c, one)
        peak = sampler.stop()  # its own CPU is not the side's
        cpu, split = tree_cpu() - cpu - sampler.cpu, _per_page(cpu_split(), split, len(urls))
        split["python_ms"] -= sampler.cpu * 1000 / len(urls)
    shot_ms = statistics.median(shots) * 1000 if shots else 0.0
    return {"pps": len(urls) / wall, "peak": peak, "idle": idle, "shot_ms": shot_ms,
            "cpu_ms": cpu * 1000 / len(urls), **split}  # fmt: skip


async def run_job(
    urls: list[tuple[int, str]], c: int, data: Path, screenshot: str | None = None
) -> dict[str, float]:
    """The chunk path of a rendered job in this process, without Prefect (as
    ``bench/chunk_path.py`` does for fetched pages): a ``JobRuntime`` (the engine's admission
    through ``Engine.browse``, the job's ordered gate, the page workers), the URLs staged as a
    job's input, ``scrape_chunk`` on one chunk of them (``_render_one`` per URL: render,
    extract the price with the job's selector, build the row, write the chunk's Parquet part,
    store the screenshot). One URL before, as its own chunk, starts the browser (the bare loop
    warms up on one page too). Every row is read back from the part and checked for its own
    price."""
    from shoal.chunking import Chunk, plan_chunks
    from shoal.contract import JobSpec
    from shoal.jobs import input_url, stage_inline, stage_record
    from shoal.output import read_kept
    from shoal.scrape import JobRuntime, scrape_chunk

    settings = Settings(  # type: ignore[call-arg]
        data_dir=data, allow_private_networks=True, render_max_pages=c, max_per_host=c
    )
    defaults: dict[str, Any] = {
        "render": True,
        "wait_for": {"selector": ".price:not(:empty)"},
        "selectors": {"price": ".price"},
    }
    if screenshot:
        defaults["formats"] = ["data", {"screenshot": {"full_page": screenshot == "full_page"}}]
    job_id = f"job_bench{os.urandom(4).hex()}"
    spec = JobSpec.model_validate(
        {
            "defaults": defaults,
            "concurrency": c,
            "output": {"format": "parquet"},
            "fields": {"price": "number"},
            "screenshots": bool(screenshot),
        }
    )
    rt = JobRuntime.open(job_id, spec, settings)
    errors: list[Any] = []
    lines = [stage_record(u, None, {}, settings, errors) for _, u in [urls[0], *urls]]
    assert not errors, errors
    stage_inline(rt.storage, job_id, [ln for ln in lines if ln is not None])
    url = input_url(rt.storage, job_id)
    single, _ = plan_chunks(rt.storage, url, settings, slots=1, size=1)
    warm, rest = single[0], Chunk(index=1, offset=single[1].offset, count=len(urls), first=1)
    try:
        assert (await scrape_chunk(rt, url, warm)).rows == 1
        assert rt._renderer is not None
        marker = rt._renderer.pool.browsers[0].marker
        idle = _idle_pss(marker)
        sampler = PssSampler(marker)
        sampler.start()
        cpu, split = tree_cpu(), cpu_split()
        t0 = time.perf_counter()
        summary = await scrape_chunk(rt, url, rest)
        wall = time.perf_counter() - t0
        peak = sampler.stop()  # its own CPU is not the side's
        cpu, split = tree_cpu() - cpu - sampler.cpu, _per_page(cpu_split(), split, len(urls))
        split["python_ms"] -= sampler.cpu * 1000 / len(urls)
    finally:
        await rt.close()
    assert (summary.rows, summary.errored, summary.rendered) == (len(urls), 0, len(urls))
    table, _ = read_kept(rt.storage, job_id, 1)
    got = table.select(["input_index", "status", "data_json", "screenshot_url", "elapsed_ms"])
    for row in got.to_pylist():
        i = urls[row["input_index"] - 1][0]
        assert row["status"] == "ok" and json.loads(row["data_json"])["price"] == price(i), row
        assert bool(row["screenshot_url"]) == bool(screenshot), row
    shots = sorted(rt.storage.glob(rt.storage.url("jobs", job_id, "screenshots", "*.png")))
    png_kb = statistics.mean(rt.storage.size(u) for u in shots) / 1024 if shots else 0
    return {"pps": len(urls) / wall, "peak": peak, "idle": idle, "cpu_ms": cpu * 1000 / len(urls),
            "elapsed_ms": statistics.median(got.column("elapsed_ms").to_pylist()),
            "png_kb": png_kb, **split}  # fmt: skip


SIDES = ("bare", "guard", "renderer", "job")


def _round(
    side: str, exe: str, urls: list[tuple[int, str]], c: int, data: Path
) -> dict[str, float]:
    if side == "bare":
        return asyncio.run(run_bare(exe, urls, c))
    if side == "guard":
        return asyncio.run(run_bare(exe, urls, c, guard=True))
    if side == "renderer":
        return asyncio.run(run_shoal(urls, c))
    return asyncio.run(run_job(urls, c, data))


def _mb(x: float) -> float:
    return x / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=240)
    ap.add_argument("--concurrency", default="4,8,16")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sides", default=",".join(SIDES), help="of " + ", ".join(SIDES))
    args = ap.parse_args()
    sides = [x for x in args.sides.split(",") if x]
    assert "bare" in sides and set(sides) <= set(SIDES), sides
    os.environ.setdefault("SHOAL_SIGNING_SECRET", "bench")  # the job path signs screenshot links
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
                  f"{os.cpu_count()} cores, load {os.getloadavg()}")  # fmt: skip
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            rows = []
            for c in (int(x) for x in args.concurrency.split(",")):
                got: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
                for r in range(args.rounds):
                    for side in sides if r % 2 == 0 else sides[::-1]:  # alternate the order
                        got[side].append(_round(side, exe, urls, c, Path(tmp) / "data"))
                metrics = ("pps", "cpu_ms", *(f"{x}_ms" for x in PARTS))
                med = {k: {m: statistics.median(x[m] for x in v) for m in metrics}
                       for k, v in got.items()}  # fmt: skip
                peak = {k: _mb(max(x["peak"] for x in v)) for k, v in got.items()}
                per_page = {k: _mb(max(x["peak"] - x["idle"] for x in v)) / c
                            for k, v in got.items()}  # fmt: skip
                rows.append((c, med, peak, per_page))
                print(f"C={c} (load {os.getloadavg()[0]:.1f}): "
                      + "; ".join(f"{k} {[round(x['pps'], 1) for x in v]} pages/s "
                                  f"{[round(x['cpu_ms']) for x in v]} CPU ms/page"
                                  for k, v in got.items()), flush=True)  # fmt: skip
            shoals = [k for k in sides if k in ("renderer", "job")]
            print()
            print("| C | pages/s " + " | ".join(sides) + " | "
                  + " | ".join(f"{k}/bare" for k in shoals) + " | CPU ms/page "
                  + " | ".join(sides) + " | " + " | ".join(f"{k}/bare by CPU" for k in shoals)
                  + " | peak PSS " + " | ".join(sides) + " | MB per open page "
                  + " | ".join(sides) + " |")  # fmt: skip
            print("|---" * (1 + 4 * len(sides) + 2 * len(shoals)) + "|")
            for c, med, peak, per_page in rows:
                b = med["bare"]
                cells = [str(c)]
                cells += [f"{med[k]['pps']:.1f}" for k in sides]
                cells += [f"{med[k]['pps'] / b['pps']:.2f}x" for k in shoals]
                cells += [f"{med[k]['cpu_ms']:.0f}" for k in sides]
                cells += [f"{b['cpu_ms'] / med[k]['cpu_ms']:.2f}x" for k in shoals]
                cells += [f"{peak[k]:.0f} MB" for k in sides]
                cells += [f"{per_page[k]:.0f}" for k in sides]
                print("| " + " | ".join(cells) + " |")
            print("\nCPU ms per page by part (medians): python | page workers | driver | Chromium")
            for c, med, _, _ in rows:
                print(f"  C={c}: " + "; ".join(
                    f"{k} " + " / ".join(f"{med[k][x + '_ms']:.0f}" for x in PARTS)
                    for k in sides))  # fmt: skip
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(f"\nbench process peak RSS {rss1 / 1024:.0f} MB (after the catalog: "
                  f"{rss0 / 1024:.0f} MB)")  # fmt: skip
            c, few = 8, urls[: max(args.pages // 3, 16)]
            print(f"\nscreenshots through the job path at C={c}, {len(few)} pages "
                  f"(load {os.getloadavg()[0]:.1f}):")  # fmt: skip
            for shot in (None, "viewport", "full_page", None):
                x = asyncio.run(run_job(few, c, Path(tmp) / "data", shot))
                parts = " / ".join(f"{x[k + '_ms']:.0f}" for k in PARTS)
                print(f"  {shot or 'none'}: {x['pps']:.1f} pages/s, {x['cpu_ms']:.0f} CPU ms "
                      f"a page ({parts}), median "
                      f"row elapsed {x['elapsed_ms']:.0f} ms"
                      + (f", PNG {x['png_kb']:.0f} KB" if shot else ""), flush=True)  # fmt: skip
        finally:
            nginx.stop()


if __name__ == "__main__":
    main()
