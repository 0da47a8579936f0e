"""Cost of a full typed extraction of a product page: this checkout against a baseline commit.

    .venv/bin/python bench/extract_values.py [--pages 2000] [--repeat 5] [--baseline 23f78b4]

Each page is parsed (``Page``) and extracted with a job's schema of every type (string,
number x3, integer, boolean, url, list[string]): a job with selectors for every field, and a
job reading structured data (JSON-LD, microdata, meta), each timed on its own, by this
checkout's ``shoal.extract`` and by the baseline
commit's (its ``shoal/extract/*.py`` read with ``git show`` into a temporary package, imported
in this same process). The pages are product pages as shops print them (44 KB with filler),
each with its own price in one of the formats of price-parser's example sets, so a cache of
price strings helps only as much as it would on a real job. Old and new alternate on
batches of 50 pages, best of ``--repeat`` per batch, in CPU time; prints CPU µs per page and
the ratio new / baseline.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_FORMATS = (
    lambda p: f"${p:,.2f}",
    lambda p: f"{p:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".") + " €",
    lambda p: f"£{p:.2f}",
    lambda p: f"{p:,.2f}\u00a0zł".replace(",", "\u00a0").replace(".", ","),
    lambda p: f"Rp {round(p * 1000):,}".replace(",", "."),
    lambda p: f"CHF {p:,.2f}".replace(",", "'"),
    lambda p: f"{p:.2f} TL".replace(".", ","),
    lambda p: f"US$ {p:.2f}",
)
_STOCK = ("In stock", "Only 3 left in stock", "Ausverkauft", "Sofort lieferbar", "Épuisé")
_FILLER = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.</p>" * 500

SCHEMA = {
    "name": "string",
    "price": "number",
    "was": "number",
    "rating": "number",
    "reviews": "integer",
    "in_stock": "boolean",
    "image": "url",
    "breadcrumbs": "list[string]",
}
SELECTORS = {
    "name": "h1",
    "price": ".price .now",
    "was": ".price .was",
    "rating": ".rating",
    "reviews": ".reviews",
    "in_stock": ".stock",
    "image": "img.main@srcset",
    "breadcrumbs": ".breadcrumb li",
}
STRUCTURED = {
    "name": "string",
    "price": "number",
    "currency": "string",
    "rating": "number",
    "review_count": "integer",
    "availability": "boolean",
    "image": "url",
    "sku": "string",
}


def product_page(n: int) -> str:
    price = round((n * 37 % 2000) + 0.99, 2)
    shown = _FORMATS[n % len(_FORMATS)]
    ld = {
        "@context": "https://schema.org",
        "@type": "Product",
        "name": f"Product {n}",
        "sku": f"SKU-{n:06d}",
        "image": f"/img/{n}.jpg",
        "aggregateRating": {"@type": "AggregateRating", "ratingValue": "4.5", "reviewCount": n},
        "offers": {
            "@type": "Offer",
            "price": str(price),
            "priceCurrency": "USD",
            "availability": "https://schema.org/InStock",
        },
    }
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Product {n} | Catalog</title>"
        f'<meta property="og:title" content="Product {n}">'
        f'<script type="application/ld+json">{json.dumps(ld)}</script></head><body>'
        '<ol class="breadcrumb"><li><a href="/">Home</a></li><li><a href="/c/k">Kitchen</a></li>'
        f"<li>Product {n}</li></ol>"
        f'<h1 class="name">Product {n}</h1>'
        f'<div class="price"><span class="now">{shown(price)}</span>'
        f'<s class="was">{shown(price * 1.2)}</s></div>'
        f'<span class="rating">4.{n % 10}</span><span class="reviews">({n} reviews)</span>'
        f'<p class="stock">{_STOCK[n % len(_STOCK)]}</p>'
        f'<img class="main" srcset="/img/{n}-320.jpg 320w, /img/{n}-960.jpg 960w">'
        f"{_FILLER}</body></html>"
    )


def load_baseline(commit: str, into: Path) -> ModuleType:
    """``shoal/extract`` at ``commit`` as the package ``baseline_extract``."""
    pkg = into / "baseline_extract"
    pkg.mkdir()
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{commit}:shoal/extract"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(
                ["git", "show", f"{commit}:shoal/extract/{name}"],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            (pkg / name).write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module("baseline_extract")


def _clear(mod: ModuleType) -> None:
    """A real job sees each page once: forget the strings an earlier run cached."""
    for module in (getattr(mod, "_values", None), getattr(mod, "_currency", None)):
        for name in ("_price_of", "currency_code", "_label_truth", "_origin"):
            cached = getattr(module, name, None)
            if cached is not None and hasattr(cached, "cache_clear"):
                cached.cache_clear()


def run(mod: ModuleType, pages: list[str], selectors: bool) -> float:
    """CPU seconds to parse these pages and extract a job's typed fields from them."""
    extract, sels = (SCHEMA, SELECTORS) if selectors else (STRUCTURED, None)
    t0 = time.process_time()
    for i, html in enumerate(pages):
        url = f"https://shop.example.com/p/{i}"
        mod.extract_data(mod.Page(html, url), base_url=url, extract=extract, selectors=sels)
    return time.process_time() - t0


def compare(old: ModuleType, new: ModuleType, pages: list[str], selectors: bool, repeat: int):
    """CPU us per page (baseline, new): old and new alternate on each batch of 50 pages (this
    machine is shared: alternating whole runs gave ratios from 1.16 to 1.48 for the same
    code), each batch's best of ``repeat`` summed."""
    totals = [0.0, 0.0]
    for start in range(0, len(pages), 50):
        batch = pages[start : start + 50]
        best = [float("inf"), float("inf")]
        for _ in range(repeat):
            for k, mod in enumerate((old, new)):
                _clear(mod)
                best[k] = min(best[k], run(mod, batch, selectors))
        totals[0] += best[0]
        totals[1] += best[1]
    return totals[0] / len(pages) * 1e6, totals[1] / len(pages) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", default="23f78b4")
    args = ap.parse_args()
    import shoal.extract as new

    pages = [product_page(n) for n in range(args.pages)]
    kb = len(pages[0]) / 1024
    print(f"{args.pages} product pages of {kb:.0f} KB, parse + typed extraction, best of "
          f"{args.repeat}, alternating; CPU us per page")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        old = load_baseline(args.baseline, Path(tmp))
        total = {"baseline": 0.0, "new": 0.0}
        for label, selectors in (("selectors", True), ("structured data", False)):
            base_us, new_us = compare(old, new, pages, selectors, args.repeat)
            total["baseline"] += base_us
            total["new"] += new_us
            print(f"{label:16} baseline {args.baseline} {base_us:6.0f}  this checkout "
                  f"{new_us:6.0f}  ratio {new_us / base_us:.3f}")  # fmt: skip
    print(f"{'both':16} baseline {args.baseline} {total['baseline']:6.0f}  this checkout "
          f"{total['new']:6.0f}  ratio {total['new'] / total['baseline']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
