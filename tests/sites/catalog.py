"""A catalog site: product pages with known truth, plus slow, failing and hanging pages.

Runs uvicorn in a thread on 127.0.0.1 (port 0). It counts hits per path and measures requests
in flight, so tests can check the job's concurrency cap and that resumed chunks are not fetched
again.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn


def price_of(n: int) -> float:
    """The true price of product ``n``."""
    return round((n * 37 % 2000) + 0.99, 2)


def _price_text(n: int) -> str:
    p = price_of(n)
    if n % 3 == 0:
        whole, cents = f"{p:,.2f}".split(".")
        return f"{whole.replace(',', '.')},{cents} €"
    return f"${p:,.2f}"


def product_html(n: int) -> str:
    ld = {
        "@context": "https://schema.org",
        "@type": "Product",
        "name": f"Product {n}",
        "sku": f"SKU-{n:06d}",
        "offers": {
            "@type": "Offer",
            "price": str(price_of(n)),
            "priceCurrency": "USD",
            "availability": "https://schema.org/InStock",
        },
    }
    filler = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>" * 40
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Product {n} | Catalog</title>"
        f'<meta property="og:title" content="Product {n}">'
        f'<script type="application/ld+json">{json.dumps(ld)}</script></head><body>'
        f'<h1 class="name">Product {n}</h1><span class="price">{_price_text(n)}</span>'
        f'<a class="next" href="/p/{n + 1}">next</a>{filler}</body></html>'
    )


@dataclass
class Stats:
    hits: collections.Counter[str] = field(default_factory=collections.Counter)
    in_flight: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.hits.clear()
            self.peak = self.in_flight


class CatalogApp:
    """ASGI app. Paths: /p/N, /slow/N?ms=M, /status/CODE/N, /hang/N, /flaky/N (500 once)."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.delay_ms = 0

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        path = scope["path"]
        qs = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        st = self.stats
        with st.lock:
            st.hits[path] += 1
            st.in_flight += 1
            st.peak = max(st.peak, st.in_flight)
            first = st.hits[path] == 1
        try:
            status, body, ctype = await self._route(path, qs, first)
        finally:
            with st.lock:
                st.in_flight -= 1
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

    async def _route(self, path: str, qs: dict[str, str], first: bool) -> tuple[int, str, str]:
        parts = path.strip("/").split("/")
        html = "text/html; charset=utf-8"
        try:
            if parts[0] == "p":
                if self.delay_ms:
                    await asyncio.sleep(self.delay_ms / 1000)
                return 200, product_html(int(parts[1])), html
            if parts[0] == "slow":
                await asyncio.sleep(int(qs.get("ms", "200")) / 1000)
                return 200, product_html(int(parts[1])), html
            if parts[0] == "status":
                return int(parts[1]), f"<h1>status {parts[1]}</h1>", html
            if parts[0] == "hang":
                await asyncio.sleep(60)
                return 200, "late", html
            if parts[0] == "flaky":
                return (500, "oops", html) if first else (200, product_html(int(parts[1])), html)
        except (IndexError, ValueError):
            pass
        return 404, "not found", html


class Site:
    """A started catalog site: ``site.url("/p/1")``."""

    def __init__(self) -> None:
        self.app = CatalogApp()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, backlog=2048, timeout_keep_alive=30
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def start(self) -> Site:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("catalog site did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def stats(self) -> Stats:
        return self.app.stats
