"""The nightly catalog site (``tests/sites/catalog.py``): what its pages say is what Shoal's
extraction reads, its validators and 304s follow RFC 9110, and its diff is the nights' truth."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import urlsplit

import pytest

from shoal.pages import process_page
from tests.sites.catalog import (
    CATALOG_EXTRACT,
    CATALOG_SELECTORS,
    FIRST_NIGHT,
    NightlyCatalog,
    sku_of,
)


@pytest.fixture
def shop() -> Iterator[NightlyCatalog]:
    site = NightlyCatalog(12, null_prices=1).start()
    try:
        yield site
    finally:
        site.stop()


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", parts.path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _extracted(url: str, selectors: bool) -> dict[str, object]:
    status, _, body = _get(url)
    assert status == 200
    sel = CATALOG_SELECTORS if selectors else None
    return process_page(body.decode(), url, CATALOG_EXTRACT, sel, ["data"])["data"]


@pytest.mark.parametrize("selectors", [True, False], ids=["css", "json-ld"])
def test_shoal_extracts_what_the_site_says(shop: NightlyCatalog, selectors: bool) -> None:
    truth = shop.data()
    assert len(truth) == 12
    assert sum(d["price"] is None for d in truth.values()) == 1  # the null-making markup
    assert {d["price_currency"] for d in truth.values()} == {"USD", "EUR", None}
    for sku, expected in truth.items():
        assert _extracted(shop.product_url(sku), selectors) == expected, sku
    shop.break_price_markup()
    for sku, expected in shop.data().items():
        assert expected["price"] is None
        assert _extracted(shop.product_url(sku), selectors) == expected, sku


def test_validators_and_304(shop: NightlyCatalog) -> None:
    sku = sorted(shop.products)[0]
    url = shop.product_url(sku)
    status, headers, body = _get(url)
    assert status == 200 and body
    etag, modified = headers["etag"], headers["last-modified"]
    assert parsedate_to_datetime(modified) == FIRST_NIGHT
    assert _get(url, **{"If-None-Match": etag})[0] == 304
    assert _get(url, **{"If-None-Match": f'"other", W/{etag}'})[0] == 304  # weak comparison
    assert _get(url, **{"If-None-Match": '"other"'})[0] == 200
    assert _get(url, **{"If-Modified-Since": modified})[0] == 304
    earlier = format_datetime(FIRST_NIGHT.replace(hour=1), usegmt=True)
    assert _get(url, **{"If-Modified-Since": earlier})[0] == 200
    assert _get(url, **{"If-Modified-Since": "yesterday-ish"})[0] == 200
    # If-None-Match wins over a matching If-Modified-Since (RFC 9110 13.2.2)
    assert _get(url, **{"If-None-Match": '"other"', "If-Modified-Since": modified})[0] == 200
    n = shop.counts()
    assert (n.full, n.not_modified, n.conditional) == (5, 3, 7)
    assert n.bytes == 5 * len(body)
    # night 2: the page of a repriced product changes, an untouched one keeps its validators
    other = sorted(shop.products)[1]
    _, before, _ = _get(shop.product_url(other))
    shop.next_night(reprice=[sku])
    status, after, _ = _get(url, **{"If-None-Match": etag, "If-Modified-Since": modified})
    assert status == 200 and after["etag"] != etag
    assert parsedate_to_datetime(after["last-modified"]) > FIRST_NIGHT
    assert _get(url, **{"If-Modified-Since": modified})[0] == 200
    status, same, _ = _get(shop.product_url(other), **{"If-None-Match": before["etag"]})
    assert status == 304 and same["etag"] == before["etag"]
    assert same["last-modified"] == before["last-modified"]
    assert (shop.counts(2).full, shop.counts(2).not_modified) == (2, 1)
    assert shop.counts(1).full == 6  # night 1's counts stay as they were
    assert [h.status for h in shop.hits[-3:]] == [200, 200, 304]
    assert shop.hits[-1].if_none_match == before["etag"] and shop.hits[-1].night == 2


def test_a_night_changes_exactly_what_its_diff_says(shop: NightlyCatalog) -> None:
    night1 = shop.data()
    urls = shop.urls(upcoming=2)
    assert len(urls) == 14 and urls[-1].endswith(sku_of(14))
    assert _get(urls[-1])[0] == 404  # not added yet
    diff = shop.next_night(add=2, remove=1, reprice=3, restock=1, null_prices=1)
    night2 = shop.data()
    assert diff.added == [sku_of(13), sku_of(14)]
    assert len(diff.removed) == 1 and diff.removed[0] not in night2
    assert _get(shop.product_url(diff.removed[0]))[0] == 404
    assert _get(urls[-1])[0] == 200
    counts = diff.counts()
    assert counts["added"] == 2 and counts["removed"] == 1
    assert counts["changed"] == 5 and counts["unchanged"] == 11 - 5
    # a repriced price, a null price and its currency, a stock flip
    assert counts["fields"]["price"] == 4 and counts["fields"]["in_stock"] == 1
    for sku, fields in diff.changed.items():
        for field, (old, new) in fields.items():
            assert (night1[sku][field], night2[sku][field]) == (old, new)
            assert old != new
        differ = {f for f in night1[sku] if night1[sku][f] != night2[sku][f]}
        assert differ - {"price_currency"} == set(fields)
    for sku in diff.unchanged:
        assert night1[sku] == night2[sku]
    rows = diff.rows()
    assert len(rows) == 2 + 1 + sum(len(f) for f in diff.changed.values())
    assert {r["change"] for r in rows} == {"added", "removed", "changed"}
    assert all(r["url"] == shop.product_url(r["key"]) for r in rows)
    as_text = diff.rows(text=True)
    stock = next(r for r in as_text if r["field"] == "in_stock")
    assert {stock["old"], stock["new"]} == {"true", "false"}
    price = next(r for r in rows if r["field"] == "price" and r["new"] is not None)
    [same] = [r for r in as_text if (r["key"], r["field"]) == (price["key"], "price")]
    assert (same["old"], same["new"]) == (repr(float(price["old"])), repr(float(price["new"])))
    by_url = shop.diff(key="url", fields=["price"])
    assert by_url.added == [shop.product_url(s) for s in diff.added]
    assert len(by_url.changed) == 4 and all(set(f) == {"price"} for f in by_url.changed.values())
    # the same seed makes the same nights
    twin = NightlyCatalog(12, null_prices=1)
    same = twin.next_night(add=2, remove=1, reprice=3, restock=1, null_prices=1)
    assert (same.added, same.removed, same.changed) == (diff.added, diff.removed, diff.changed)
    assert twin.data() == night2


def test_broken_markup_nulls_every_price(shop: NightlyCatalog) -> None:
    diff = shop.break_price_markup()
    readable = [s for s, d in shop.nights[0].data().items() if d["price"] is not None]
    assert sorted(diff.changed) == sorted(readable)
    assert all(set(f) == {"price"} for f in diff.changed.values())
    with_currency = shop.diff(fields=["price", "price_currency"])
    assert all(set(f) == {"price", "price_currency"} for f in with_currency.changed.values())
    assert shop.next_night().counts()["changed"] == 0  # stays broken
    assert shop.next_night(break_prices=False).counts()["changed"] == len(readable)


def test_mixed_validators() -> None:
    site = NightlyCatalog(8, validators="mixed").start()
    try:
        seen = {}
        for sku in sorted(site.products):
            _, headers, _ = _get(site.product_url(sku))
            seen[sku] = ("etag" in headers, "last-modified" in headers)
    finally:
        site.stop()
    assert seen[sku_of(4)] == (True, True)  # n % 4: both, ETag, Last-Modified, none
    assert seen[sku_of(1)] == (True, False)
    assert seen[sku_of(2)] == (False, True)
    assert seen[sku_of(3)] == (False, False)
