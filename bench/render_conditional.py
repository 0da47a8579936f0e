"""What asking a rendered URL conditionally first costs (``shoal.scrape._render_if_modified``).

    .venv/bin/python bench/render_conditional.py [--pages 40]

Against the nightly catalog site on 127.0.0.1, one page at a time, each page: a plain GET
through the engine (its ``200``: what a changed page pays on top of its render), the same GET
with the page's ``If-None-Match`` (its ``304``: what an unchanged page costs instead of a
render), and a render of the page in Chromium (``python -m shoal.render`` must say a browser
is there). Prints medians and p90s, and the GET's share of a render.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ["SHOAL_ALLOW_PRIVATE_NETWORKS"] = "1"  # the site is on 127.0.0.1
os.environ.setdefault("SHOAL_SIGNING_SECRET", "bench")

from shoal.fetch import Engine, FetchOptions  # noqa: E402
from shoal.render import Renderer  # noqa: E402
from shoal.settings import get_settings  # noqa: E402
from tests.sites.catalog import NightlyCatalog  # noqa: E402


def _opts(headers: dict[str, str]) -> FetchOptions:
    return FetchOptions(
        timeout_s=20,
        headers=headers,
        max_body_bytes=10_000_000,
        proxy_type="none",
        respect_robots=False,
    )


def _ms(xs: list[float], q: float = 0.5) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000


async def main(pages: int) -> None:
    shop = NightlyCatalog(pages, seed=3).start()
    settings = get_settings()
    engine = Engine(concurrency=1, settings=settings)
    renderer = Renderer(settings)
    await renderer.start()
    try:
        urls = shop.urls()
        await engine.fetch(urls[0], _opts({}))  # warm: connection, browser
        await renderer.render(urls[0])
        got: dict[str, list[float]] = {"GET 200": [], "GET 304": [], "render": []}
        sizes = []
        for url in urls:
            t = time.perf_counter()
            resp = await engine.fetch(url, _opts({}))
            got["GET 200"].append(time.perf_counter() - t)
            sizes.append(len(resp.content))
            t = time.perf_counter()
            again = await engine.fetch(url, _opts({"If-None-Match": resp.headers["etag"]}))
            got["GET 304"].append(time.perf_counter() - t)
            assert again.status == 304, again.status
            t = time.perf_counter()
            await renderer.render(url)
            got["render"].append(time.perf_counter() - t)
        print(f"{len(urls)} pages of {statistics.median(sizes) / 1000:.1f} KB")
        for name, xs in got.items():
            print(f"{name:8} median {_ms(xs):7.1f} ms  p90 {_ms(xs, 0.9):7.1f} ms")
        share = _ms(got["GET 200"]) / _ms(got["render"]) * 100
        print(f"a changed page's extra GET: {share:.1f} % of its render (medians)")
    finally:
        await renderer.aclose()
        await engine.aclose()
        shop.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=40)
    asyncio.run(main(ap.parse_args().pages))
