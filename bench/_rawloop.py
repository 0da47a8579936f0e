"""The baseline: a bare aiohttp + selectolax loop (fetch, parse ``h1`` and ``.price`` text).

``run(urls, concurrency, processes)`` splits the URLs into ``processes`` contiguous slices and
runs the loop in that many spawned processes, each with ``concurrency // processes`` requests in
flight. The processes import and get ready first, then start together; the rate is
N / (start -> last process done). CPU is each process's ``getrusage(RUSAGE_SELF)`` over its loop;
peak RSS is each process's ``ru_maxrss`` (whole life), summed over the processes.
Every page is checked: ``h1`` == ``Product n`` and the price text parses to ``price_of(n)``.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing as mp
import re
import resource
import time
from typing import Any

_NUM = re.compile(r"[\d.,]+")


def parse_price(text: str | None) -> float | None:
    """``$1,234.99`` or ``1.234,99 €`` (the catalog's two styles) -> 1234.99."""
    if not text:
        return None
    m = _NUM.search(text)
    if not m:
        return None
    s = m.group(0)
    # European style: dots group thousands and a comma is the decimal point
    european = re.search(r",\d{2}$", s) is not None
    s = s.replace(".", "").replace(",", ".") if european else s.replace(",", "")
    try:
        return float(s)
    except ValueError:
        return None


def page_no(url: str) -> int:
    return int(url.rsplit("/", 1)[1])


async def _loop(urls: list[str], concurrency: int) -> tuple[int, int, dict[str, int]]:
    import aiohttp
    from selectolax.lexbor import LexborHTMLParser

    from tests.sites.catalog import price_of

    it = iter(urls)
    ok = bad = 0
    errors: collections.Counter[str] = collections.Counter()
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal ok, bad
            for url in it:
                try:
                    async with session.get(url) as r:
                        body = await r.read()
                        status = r.status
                    tree = LexborHTMLParser(body.decode("utf-8", "replace"))
                    h1, price = tree.css_first("h1"), tree.css_first(".price")
                    title = h1.text() if h1 is not None else None
                    value = parse_price(price.text() if price is not None else None)
                    n = page_no(url)
                    if (
                        status == 200
                        and title == f"Product {n}"
                        and value is not None
                        and abs(value - price_of(n)) < 0.005
                    ):
                        ok += 1
                    else:
                        bad += 1
                        errors[f"http {status} / values"] += 1
                except (TimeoutError, aiohttp.ClientError) as exc:
                    bad += 1
                    errors[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, bad, dict(errors)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _child(urls: list[str], concurrency: int, ready: Any, go: Any, out: Any) -> None:
    import aiohttp  # noqa: F401 - imported before the start line
    import selectolax.lexbor  # noqa: F401

    import tests.sites.catalog  # noqa: F401

    ready.set()
    go.wait()
    c0, t0 = _cpu(), time.time()
    ok, bad, errors = asyncio.run(_loop(urls, concurrency))
    t1, c1 = time.time(), _cpu()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.send(
        {"t0": t0, "t1": t1, "cpu": c1 - c0, "rss": maxrss, "ok": ok, "bad": bad, "errors": errors}
    )
    out.close()


def run(urls: list[str], concurrency: int, processes: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    size = -(-len(urls) // processes)
    slices = [urls[i : i + size] for i in range(0, len(urls), size)]
    per = max(1, concurrency // processes)
    go = ctx.Event()
    kids, pipes, readies = [], [], []
    try:
        for part in slices:
            ready = ctx.Event()
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_child, args=(part, per, ready, go, send), daemon=True)
            p.start()
            send.close()
            kids.append(p)
            pipes.append(recv)
            readies.append(ready)
        for r in readies:
            if not r.wait(60):
                raise RuntimeError("a baseline process did not get ready in 60 s")
        start = time.time()
        go.set()
        results = [pipe.recv() for pipe in pipes]
        for p in kids:
            p.join(10)
    finally:
        for p in kids:
            if p.is_alive():
                p.kill()
                p.join(5)
    end = max(r["t1"] for r in results)
    errors: collections.Counter[str] = collections.Counter()
    for r in results:
        errors.update(r["errors"])
    return {
        "elapsed": end - start,
        "rate": len(urls) / (end - start),
        "cpu": sum(r["cpu"] for r in results),
        "rss": sum(r["rss"] for r in results),
        "ok": sum(r["ok"] for r in results),
        "bad": sum(r["bad"] for r in results),
        "errors": dict(errors),
        "per_process": [(r["t1"] - start, r["cpu"], r["rss"]) for r in results],
    }
