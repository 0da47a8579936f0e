"""A catalog site: product pages with known truth, plus slow, failing and hanging pages.

Runs uvicorn in a thread on 127.0.0.1 (port 0). It counts hits per path and measures requests
in flight, so tests can check the job's concurrency cap and that resumed chunks are not fetched
again.

``NightlyCatalog`` (same server) is a shop that changes between "nights" on the test's command,
with ETag/Last-Modified and 304s, per-night counters and the exact diff of each night: for
schedules, change reports, conditional fetch and quality gates (issue 13).

    shop = NightlyCatalog(200, validators="both").start()
    urls = shop.urls(upcoming=5)            # a fixed list: 5 products added later 404 until then
    ... job 1 with defaults {"extract": CATALOG_EXTRACT, "selectors": CATALOG_SELECTORS} ...
    diff = shop.next_night(add=5, remove=3, reprice=10, restock=2, null_prices=2)
    ... job 2 ...
    assert report == diff.counts()          # added, removed, changed, unchanged, fields
    shop.counts(2).not_modified, shop.counts(2).full, shop.counts(2).bytes
    shop.break_price_markup()               # a night where every price reads null
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal

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

    def __init__(self, app: Any | None = None) -> None:
        self.app = CatalogApp() if app is None else app
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


# ------------------------------------------------------------------ a catalog that changes nightly

#: what a job asks of the nightly catalog's pages, and the selectors that read them (without
#: selectors, the same values come from the pages' JSON-LD)
CATALOG_EXTRACT: dict[str, str] = {
    "sku": "string",
    "name": "string",
    "price": "number",
    "in_stock": "boolean",
}
CATALOG_SELECTORS: dict[str, str] = {
    "sku": ".sku",
    "name": "h1.name",
    "price": ".price",
    "in_stock": ".stock",
}
#: the fields of ``data`` a job with ``CATALOG_EXTRACT`` gets (``price_currency`` is Shoal's
#: companion of the ``number`` field)
CATALOG_FIELDS: tuple[str, ...] = ("sku", "name", "price", "price_currency", "in_stock")
#: night 1 is this instant; each night is a day later (``Last-Modified`` are on this clock)
FIRST_NIGHT = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
Validators = Literal["both", "etag", "last_modified", "none", "mixed"]
_MIXED: tuple[str, ...] = ("both", "etag", "last_modified", "none")


def sku_of(n: int) -> str:
    return f"SKU-{n:06d}"


@dataclass(frozen=True)
class Product:
    """One product as a night's catalog has it; ``readable_price`` False prints a price no
    parser can read (``price`` null: the "few with null-making markup")."""

    n: int
    name: str
    price: float
    currency: Literal["USD", "EUR"]
    in_stock: bool
    readable_price: bool = True

    @property
    def sku(self) -> str:
        return sku_of(self.n)

    def data(self, broken: bool = False) -> dict[str, Any]:
        """The ``data`` Shoal extracts with ``CATALOG_EXTRACT`` (selectors or JSON-LD)."""
        shown = self.readable_price and not broken
        return {
            "sku": self.sku,
            "name": self.name,
            "price": self.price if shown else None,
            "price_currency": self.currency if shown else None,
            "in_stock": self.in_stock,
        }


def _nightly_html(p: Product, broken: bool) -> str:
    ld: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "Product",
        "name": p.name,
        "sku": p.sku,
        "offers": {
            "@type": "Offer",
            "availability": "https://schema.org/" + ("InStock" if p.in_stock else "OutOfStock"),
        },
    }
    if p.currency == "USD":
        printed = f"${p.price:,.2f}"
    else:
        whole, cents = f"{p.price:,.2f}".split(".")
        printed = f"{whole.replace(',', '.')},{cents} €"
    if broken:  # the shop's new theme: the amount only in an attribute no selector reads
        price = f'<div class="amount-box" data-cents="{round(p.price * 100)}"></div>'
    elif not p.readable_price:
        price = '<span class="price">Price on request</span>'
    else:
        price = f'<span class="price">{printed}</span>'
        ld["offers"] |= {"price": f"{p.price:.2f}", "priceCurrency": p.currency}
    stock = "In stock" if p.in_stock else "Out of stock"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{p.name} | Nightly catalog</title>"
        f'<script type="application/ld+json">{json.dumps(ld)}</script></head><body>'
        f'<h1 class="name">{p.name}</h1><span class="sku">{p.sku}</span>{price}'
        f'<span class="stock">{stock}</span><a href="/">all products</a>'
        "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p></body></html>"
    )


@dataclass
class _Page:
    body: bytes
    etag: str
    last_modified: datetime


@dataclass(frozen=True)
class Night:
    """The catalog one night: products by SKU, and whether the price markup is broken."""

    number: int
    products: dict[str, Product]
    broken: bool

    def data(self) -> dict[str, dict[str, Any]]:
        return {sku: p.data(self.broken) for sku, p in self.products.items()}


@dataclass
class NightCounts:
    """What product pages one night answered: ``full`` 200s (``bytes`` of their bodies),
    ``not_modified`` 304s, ``not_found`` 404s, and how many requests carried a conditional."""

    full: int = 0
    bytes: int = 0
    not_modified: int = 0
    not_found: int = 0
    conditional: int = 0


@dataclass(frozen=True)
class Hit:
    """One request to a product page, as the site saw it."""

    night: int
    path: str
    status: int
    if_none_match: str | None
    if_modified_since: str | None


@dataclass(frozen=True)
class NightDiff:
    """What changed between two nights, keyed by SKU or by product URL; ``changed`` maps a key
    to ``{field: (old, new)}`` for each field whose extracted value differs."""

    added: list[str]
    removed: list[str]
    changed: dict[str, dict[str, tuple[Any, Any]]]
    unchanged: list[str]
    urls: dict[str, str]  # key -> product URL

    def counts(self) -> dict[str, Any]:
        """As the contract's ``changes`` object counts them (``duplicate_keys`` is always 0)."""
        fields: collections.Counter[str] = collections.Counter()
        for per_field in self.changed.values():
            fields.update(per_field.keys())
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
            "unchanged": len(self.unchanged),
            "duplicate_keys": 0,
            "fields": dict(fields),
        }

    def rows(self, *, text: bool = False) -> list[dict[str, Any]]:
        """The changes file's rows (``key, change, field, old, new, url``): one per added or
        removed key (``field``, ``old``, ``new`` null), one per changed field; sorted by key,
        then field. ``text``: ``old``/``new`` as the changes file writes them (a string's
        content, a number as a float ``29.0``, ``true``/``false``; null stays None)."""
        if text:
            return [
                {**r, "old": _as_text(r["old"]), "new": _as_text(r["new"])} for r in self.rows()
            ]
        out = [
            {"key": k, "change": c, "field": None, "old": None, "new": None, "url": self.urls[k]}
            for c, keys in (("added", self.added), ("removed", self.removed))
            for k in keys
        ]
        for k, per_field in self.changed.items():
            for f, (old, new) in per_field.items():
                out.append(
                    {"key": k, "change": "changed", "field": f, "old": old, "new": new,
                     "url": self.urls[k]}
                )  # fmt: skip
        return sorted(out, key=lambda r: (r["key"], r["field"] or ""))


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value))
    return json.dumps(value, separators=(",", ":"))


class _NightlyApp:
    """ASGI app of ``NightlyCatalog``: ``/`` lists the products, ``/product/<SKU>`` is one."""

    def __init__(self, site: NightlyCatalog) -> None:
        self.site = site

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, body, extra = self.site._answer(scope["path"], headers)
        out = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            *((k.encode(), v.encode()) for k, v in extra),
        ]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})


class NightlyCatalog(Site):
    """A product catalog that changes between "nights" on the test's command.

    ``/`` lists tonight's products; ``/product/SKU-000001`` is one product's page (SKU, name,
    price with its currency, stock: CSS-selectable, see ``CATALOG_SELECTORS``, and JSON-LD).
    A page answers with ``ETag`` (a hash of its body) and ``Last-Modified`` (the night its
    body last changed, on a clock where night 1 is ``FIRST_NIGHT`` and each night a day later)
    and ``304`` to a matching ``If-None-Match`` (which wins when both are sent, RFC 9110
    13.2.2) or a not-older ``If-Modified-Since``. ``validators`` chooses which of the two the
    pages send ("mixed": by product number, both / ETag only / Last-Modified only / none).
    A product not in tonight's catalog is ``404``.

    Everything is deterministic from ``seed``: ``next_night(add=2, remove=1, reprice=3)``
    makes the same changes in every run. It returns the night's ``NightDiff`` (also
    ``diff()``), the exact truth to compare a change report with. ``counts()`` gives what the
    pages answered per night (200s and their bytes, 304s, 404s) and ``hits`` every request.
    """

    def __init__(
        self,
        products: int = 20,
        *,
        seed: int = 13,
        validators: Validators = "both",
        null_prices: int = 0,
    ) -> None:
        super().__init__(app=_NightlyApp(self))
        self.validators = validators
        self._rng = random.Random(seed)
        self._next_n = 1
        self._lock = threading.Lock()
        self._pages: dict[tuple[int, str], _Page] = {}  # (night, sku) -> its page that night
        self._counts: dict[int, NightCounts] = collections.defaultdict(NightCounts)
        self.hits: list[Hit] = []
        first = dict(self._new_product() for _ in range(products))
        self.nights: list[Night] = [Night(1, first, False)]
        self._apply_null_prices(first, null_prices)

    # --- what the test reads
    @property
    def night(self) -> int:
        """Tonight's number (1 at the start)."""
        return self.nights[-1].number

    @property
    def products(self) -> dict[str, Product]:
        """Tonight's products by SKU."""
        return self.nights[-1].products

    def product_url(self, sku: str) -> str:
        return self.url(f"/product/{sku}")

    def urls(self, upcoming: int = 0) -> list[str]:
        """Tonight's product URLs, by SKU, then the URLs of the next ``upcoming`` products
        ``add`` will create (404 until then): an input list that stays fixed across nights."""
        skus = sorted(self.products)
        skus += [sku_of(n) for n in range(self._next_n, self._next_n + upcoming)]
        return [self.product_url(s) for s in skus]

    def data(self) -> dict[str, dict[str, Any]]:
        """Tonight's expected ``data`` of each product by SKU (``CATALOG_EXTRACT``)."""
        return self.nights[-1].data()

    def counts(self, night: int | None = None) -> NightCounts:
        """What product pages answered during ``night`` (default tonight)."""
        with self._lock:
            return dataclasses.replace(self._counts[night or self.night])

    def diff(
        self,
        *,
        since: int | None = None,
        key: str = "sku",
        fields: Iterable[str] | None = None,
    ) -> NightDiff:
        """What changed from night ``since`` (default last night) to tonight, keyed by
        ``"sku"`` or ``"url"``, comparing ``fields`` (default: the fields of
        ``CATALOG_EXTRACT`` but the key, as a change report compares them; ``price_currency``
        only when named)."""
        before = self.nights[(since or self.night - 1) - 1].data()
        after = self.nights[-1].data()
        compared = [f for f in (fields or CATALOG_EXTRACT) if f != key]

        def k(sku: str) -> str:
            return self.product_url(sku) if key == "url" else sku

        changed: dict[str, dict[str, tuple[Any, Any]]] = {}
        unchanged: list[str] = []
        for sku in sorted(before.keys() & after.keys()):
            per_field = {
                f: (before[sku][f], after[sku][f])
                for f in compared
                if before[sku][f] != after[sku][f]
            }
            if per_field:
                changed[k(sku)] = per_field
            else:
                unchanged.append(k(sku))
        return NightDiff(
            added=sorted(k(s) for s in after.keys() - before.keys()),
            removed=sorted(k(s) for s in before.keys() - after.keys()),
            changed=changed,
            unchanged=unchanged,
            urls={k(s): self.product_url(s) for s in before.keys() | after.keys()},
        )

    # --- what the test changes
    def next_night(
        self,
        *,
        add: int = 0,
        remove: int | Iterable[str] = 0,
        reprice: int | Iterable[str] = 0,
        restock: int | Iterable[str] = 0,
        null_prices: int | Iterable[str] = 0,
        break_prices: bool | None = None,
    ) -> NightDiff:
        """Start the next night: ``remove`` products, ``reprice`` (a new price), ``restock``
        (stock flips), ``null_prices`` (printed unreadably: ``price`` null), each a count
        (chosen by the seed among tonight's products not otherwise changed) or SKUs; ``add``
        new products (the next SKUs); ``break_prices`` True prints every price unreadably from
        now on, False restores them. Returns what changed (``diff()``)."""
        products = dict(self.products)
        taken: set[str] = set()
        for sku in self._pick(products, remove, taken):
            del products[sku]
        readable = {s: p for s, p in products.items() if p.readable_price}
        for sku in self._pick(readable, reprice, taken):  # a price nobody reads: no change
            old = products[sku]
            products[sku] = dataclasses.replace(old, price=self._new_price(old.price))
        for sku in self._pick(products, restock, taken):
            products[sku] = dataclasses.replace(products[sku], in_stock=not products[sku].in_stock)
        self._apply_null_prices(products, null_prices, taken)
        products.update(self._new_product() for _ in range(add))
        broken = self.nights[-1].broken if break_prices is None else break_prices
        with self._lock:
            self.nights.append(Night(self.night + 1, products, broken))
        return self.diff()

    def break_price_markup(self) -> NightDiff:
        """Start the next night with every price printed so that no parser reads it (the
        quality-gate case: ``price`` null on every page)."""
        return self.next_night(break_prices=True)

    # --- internals
    def _new_product(self) -> tuple[str, Product]:
        n, self._next_n = self._next_n, self._next_n + 1
        rng = self._rng
        p = Product(
            n=n,
            name=f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {n}",
            price=round(rng.uniform(2, 900), 2),
            currency="EUR" if n % 3 == 0 else "USD",
            in_stock=rng.random() < 0.8,
        )
        return p.sku, p

    def _new_price(self, old: float) -> float:
        while (new := round(old * self._rng.uniform(0.7, 1.3), 2)) == old:
            pass
        return new

    def _pick(self, products: dict[str, Product], which: int | Iterable[str], taken: set[str]):  # type: ignore[no-untyped-def]
        if isinstance(which, int):
            free = sorted(set(products) - taken)
            chosen = sorted(self._rng.sample(free, which))
        else:
            chosen = sorted(which)
            missing = set(chosen) - set(products)
            assert not missing, f"not in tonight's catalog: {sorted(missing)}"
        taken.update(chosen)
        return chosen

    def _apply_null_prices(
        self,
        products: dict[str, Product],
        which: int | Iterable[str],
        taken: set[str] | None = None,
    ) -> None:
        candidates = {s: p for s, p in products.items() if p.readable_price}
        for sku in self._pick(candidates, which, taken if taken is not None else set()):
            products[sku] = dataclasses.replace(products[sku], readable_price=False)

    def _validators_of(self, p: Product) -> str:
        return _MIXED[p.n % 4] if self.validators == "mixed" else self.validators

    def _page(self, night: Night, sku: str) -> _Page:
        """The page of ``sku`` tonight, its ETag, and the night its body last changed."""
        page = self._pages.get((night.number, sku))
        if page is None:
            body = _nightly_html(night.products[sku], night.broken).encode()
            etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
            earlier = self._pages.get((night.number - 1, sku))
            if (
                earlier is None
                and night.number > 1
                and sku in self.nights[night.number - 2].products
            ):
                earlier = self._page(self.nights[night.number - 2], sku)
            if earlier is not None and earlier.etag == etag:
                since = earlier.last_modified
            else:
                since = FIRST_NIGHT + timedelta(days=night.number - 1)
            page = self._pages[(night.number, sku)] = _Page(body, etag, since)
        return page

    def _answer(
        self, path: str, headers: dict[str, str]
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        with self._lock:
            night = self.nights[-1]
            if path == "/":
                links = "".join(
                    f'<li><a class="product" href="/product/{s}">{p.name}</a></li>'
                    for s, p in sorted(night.products.items())
                )
                return 200, f"<!doctype html><ul>{links}</ul>".encode(), []
            if not path.startswith("/product/"):  # robots.txt and the like: not counted
                return 404, b"<h1>not found</h1>", []
            counts = self._counts[night.number]
            inm, ims = headers.get("if-none-match"), headers.get("if-modified-since")
            counts.conditional += inm is not None or ims is not None
            sku = path.removeprefix("/product/")
            if sku not in night.products:
                counts.not_found += 1
                self.hits.append(Hit(night.number, path, 404, inm, ims))
                return 404, b"<h1>no such product</h1>", []
            page = self._page(night, sku)
            kinds = self._validators_of(night.products[sku])
            extra = []
            if kinds in ("both", "etag"):
                extra.append(("etag", page.etag))
            if kinds in ("both", "last_modified"):
                extra.append(("last-modified", format_datetime(page.last_modified, usegmt=True)))
            status = 304 if _fresh(page, kinds, inm, ims) else 200
            self.hits.append(Hit(night.number, path, status, inm, ims))
            if status == 304:
                counts.not_modified += 1
                return 304, b"", extra
            counts.full += 1
            counts.bytes += len(page.body)
            return 200, page.body, extra


def _fresh(page: _Page, kinds: str, inm: str | None, ims: str | None) -> bool:
    """Whether a conditional GET matches (RFC 9110 13.1.2, 13.1.3; If-None-Match wins)."""
    if inm is not None:
        if kinds not in ("both", "etag"):
            return False
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or page.etag in tags
    if ims is None or kinds not in ("both", "last_modified"):
        return False
    try:
        since = parsedate_to_datetime(ims)
    except (TypeError, ValueError):
        return False
    return since.tzinfo is not None and page.last_modified <= since


_ADJECTIVES = ("Red", "Quiet", "Sturdy", "Tiny", "Golden", "Swift", "Woolen", "Bright")
_NOUNS = ("Kettle", "Lamp", "Backpack", "Mug", "Scarf", "Drill", "Chair", "Notebook")
